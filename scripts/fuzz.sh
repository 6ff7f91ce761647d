#!/usr/bin/env bash
# Builds the libFuzzer targets in tests/fuzz/ with clang (-fsanitize=fuzzer,address,undefined)
# and runs each for FUZZ_SECONDS (default 60): the experiment loader, the GPT-2 tokenizer, the
# CIFAR-10 reader and the checkpoint readers (the last two link libtorch, found as the build
# finds it; libtorch itself is not instrumented, efftrain's code is). Seeds: experiments/ and
# configs/ YAML, the WikiText-2 validation text, CIFAR-10 records, a real checkpoint.
# Findings (crash-*, leak-*, timeout-*) land in build-fuzz/artifacts/; the summary says how many
# executions each target ran.
# Usage: scripts/fuzz.sh [target...]   (targets: config tokenizer cifar10 checkpoint)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${EFFTRAIN_FUZZ_DIR:-$root/build-fuzz}"
seconds="${FUZZ_SECONDS:-60}"
cxx="${CXX_FUZZ:-$(command -v clang++-14 || command -v clang++)}"
[ -n "$cxx" ] || { echo "fuzz: clang++ not found (apt-get install clang)" >&2; exit 2; }
mkdir -p "$out/artifacts"
common=(lib/efftrain/core/util.cpp lib/efftrain/core/files.cpp lib/efftrain/core/registry.cpp)
flags=(-std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Ilib)

build() {  # name sources... [-- extra compiler/linker flags]
  local name="$1"; shift
  local sources=() extra=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do sources+=("$1"); shift; done
  [ $# -gt 0 ] && shift && extra=("$@")
  if [ ! -x "$out/$name" ] || [ -n "$(find "${sources[@]}" tests/fuzz/*.cpp tests/fuzz/*.h lib/efftrain -newer "$out/$name" -print -quit)" ]; then
    echo "fuzz: building $name"
    "$cxx" "${flags[@]}" "${sources[@]}" "${common[@]}" -o "$out/$name" -lyaml-cpp "${extra[@]}"
  fi
}
torch_flags() {  # libtorch's headers and libraries, from the prefix scripts/setup.sh recorded
  local prefix
  prefix="$(cat "${EFFTRAIN_CACHE:-$HOME/.cache/efftrain}/torch-prefix" 2>/dev/null || true)"
  [ -f "$prefix/Torch/TorchConfig.cmake" ] || { echo "fuzz: no libtorch found (run scripts/setup.sh)" >&2; exit 2; }
  local torch_dir; torch_dir="$(cd "$prefix/../.." && pwd)"
  echo "-isystem $torch_dir/include -isystem $torch_dir/include/torch/csrc/api/include -D_GLIBCXX_USE_CXX11_ABI=1"
  echo "-L$torch_dir/lib -Wl,-rpath,$torch_dir/lib -ltorch -ltorch_cpu -lc10"
}
targets=("${@:-config tokenizer cifar10 checkpoint}")
for t in ${targets[*]}; do
  max_len=""
  rss_mb=2048
  case "$t" in
    config)
      build config_fuzz tests/fuzz/config_fuzz.cpp lib/efftrain/config/tree.cpp lib/efftrain/config/schema.cpp
      mkdir -p "$out/corpus/config"
      cp experiments/*.yaml experiments/*/*.yaml configs/*.yaml configs/*/*.yaml "$out/corpus/config/" 2>/dev/null || true
      args=("$out/corpus/config") ;;
    tokenizer)
      build tokenizer_fuzz tests/fuzz/tokenizer_fuzz.cpp lib/efftrain/data/gpt2_tokenizer.cpp
      mkdir -p "$out/corpus/tokenizer"
      if [ -f .data/prepared/wikitext-2/wiki.valid.tokens ]; then
        head -c 2000 .data/prepared/wikitext-2/wiki.valid.tokens | (printf '\0'; cat) > "$out/corpus/tokenizer/wiki"
      fi
      printf '\0h\xc3\xa9llo <|endoftext|> w\xf0\x9f\x98\x80rld' > "$out/corpus/tokenizer/mixed"
      [ -d .data/prepared/gpt2 ] || { echo "fuzz: tokenizer needs .data/prepared/gpt2 (shared/tools/prepare-data.sh)" >&2; exit 2; }
      args=("$out/corpus/tokenizer") ;;
    cifar10)
      # shellcheck disable=SC2046
      build cifar10_fuzz tests/fuzz/cifar10_fuzz.cpp lib/efftrain/data/cifar10.cpp -- $(torch_flags)
      mkdir -p "$out/corpus/cifar10"
      if [ -f .data/prepared/cifar-10-batches-bin/test_batch.bin ]; then
        head -c $((3073 * 2)) .data/prepared/cifar-10-batches-bin/test_batch.bin > "$out/corpus/cifar10/two-records"
      fi
      head -c 3073 /dev/zero > "$out/corpus/cifar10/zero-record"
      max_len=$((3073 * 3))
      args=("$out/corpus/cifar10") ;;
    checkpoint)
      # shellcheck disable=SC2046
      build checkpoint_fuzz tests/fuzz/checkpoint_fuzz.cpp lib/efftrain/engine/checkpoint_files.cpp \
        lib/efftrain/config/tree.cpp lib/efftrain/config/schema.cpp -- $(torch_flags)
      mkdir -p "$out/corpus/checkpoint"
      seed_ckpt="$(ls -d "$out"/seed-run/checkpoints/step-* 2>/dev/null | head -1 || true)"
      if [ -z "$seed_ckpt" ] && [ -x build/efftrain ]; then  # a real checkpoint as seeds
        build/efftrain run experiments/quickstart.yaml --device cpu --set train.max_steps=2 \
          --set output.save_checkpoint=true --out "$out/seed-run" --overwrite >/dev/null 2>&1 || true
        seed_ckpt="$(ls -d "$out"/seed-run/checkpoints/step-* 2>/dev/null | head -1 || true)"
      fi
      if [ -n "$seed_ckpt" ]; then
        (printf '\0'; cat "$seed_ckpt/manifest.json") > "$out/corpus/checkpoint/manifest"
        (printf '\1'; cat "$seed_ckpt/rank0.state.pt") > "$out/corpus/checkpoint/state"
      fi
      printf '\0{"format":"efftrain.checkpoint/2","world_size":1,"files":[]}' > "$out/corpus/checkpoint/small"
      max_len=65536
      rss_mb=6144  # libtorch under ASan grows past libFuzzer's default 2 GB over a long run
      args=("$out/corpus/checkpoint") ;;
    *) echo "fuzz: unknown target $t (config, tokenizer, cifar10, checkpoint)" >&2; exit 2 ;;
  esac
  log="$out/$t.log"
  LSAN_OPTIONS="suppressions=$root/tests/fuzz/lsan-libtorch.supp:print_suppressions=0" \
  "$out/${t}_fuzz" -max_total_time="$seconds" -max_len="${max_len:-4096}" -rss_limit_mb="$rss_mb" -timeout=10 -artifact_prefix="$out/artifacts/$t-" \
    "${args[@]}" > "$log" 2>&1 && rc=0 || rc=$?
  runs="$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')"
  echo "fuzz: $t: exit $rc, $runs executions in ${seconds}s$( [ $rc = 0 ] || echo "; see $log and $out/artifacts")"
done
