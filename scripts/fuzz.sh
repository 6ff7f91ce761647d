#!/usr/bin/env bash
# Builds the libFuzzer targets in tests/fuzz/ with clang (-fsanitize=fuzzer,address,undefined)
# and runs each for FUZZ_SECONDS (default 60). Torch-free parts only: the experiment loader and
# the GPT-2 tokenizer. Seeds: experiments/ and configs/ YAML, the WikiText-2 validation text.
# Findings (crash-*, leak-*, timeout-*) land in build-fuzz/artifacts/; the summary says how many
# executions each target ran. Usage: scripts/fuzz.sh [target...]   (targets: config tokenizer)
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

build() {  # name sources...
  local name="$1"; shift
  if [ ! -x "$out/$name" ] || [ -n "$(find "$@" tests/fuzz/*.cpp tests/fuzz/*.h lib/efftrain -newer "$out/$name" -print -quit)" ]; then
    echo "fuzz: building $name"
    "$cxx" "${flags[@]}" "$@" "${common[@]}" -o "$out/$name" -lyaml-cpp
  fi
}
targets=("${@:-config tokenizer}")
for t in ${targets[*]}; do
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
    *) echo "fuzz: unknown target $t (config, tokenizer)" >&2; exit 2 ;;
  esac
  log="$out/$t.log"
  "$out/${t}_fuzz" -max_total_time="$seconds" -max_len=4096 -timeout=10 -artifact_prefix="$out/artifacts/$t-" \
    "${args[@]}" > "$log" 2>&1 && rc=0 || rc=$?
  runs="$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')"
  echo "fuzz: $t: exit $rc, $runs executions in ${seconds}s$( [ $rc = 0 ] || echo "; see $log and $out/artifacts")"
done
