#!/usr/bin/env bash
# One call on the GPU machine: build with all cores, run the test suite (GPU tests included),
# the CUDA quickstart, and the benchmarks named in $EFFTRAIN_BENCH (space-separated names of
# scripts/bench/*.sh). Only small results go under $OUT (summary.txt, benchmark JSONs, logs of
# what failed); run folders stay in /tmp/efftrain-bench on the machine. More than 8 files under
# $OUT (the device's limit) go back packed in results.tgz.
#   device run: EFFTRAIN_BENCH="resnet50_input" scripts/gpu-check.sh     carry: [".data/data", ".data/tools"]
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$root/gpu-out}"
mkdir -p "$OUT"
cd "$root"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }

log "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1) x $(nvidia-smi -L | wc -l)"
if [ -d .data/data ] && [ ! -f .data/prepared/cifar-10-batches-bin/test_batch.bin ]; then
  bash .data/tools/prepare-data.sh .data/prepared > /tmp/prepare.log 2>&1 || { log "prepare-data FAILED"; tail -5 /tmp/prepare.log; }
fi
t0=$(date +%s)
if ! EFFTRAIN_JOBS="$(nproc)" scripts/build.sh > /tmp/build.log 2>&1; then
  cp /tmp/build.log "$OUT/build.log"; log "build FAILED"; tail -40 /tmp/build.log; exit 1
fi
log "build: $(( $(date +%s) - t0 ))s; $(grep -ho "efftrain: CUDA kernels.*\|efftrain: no nvcc.*" "${EFFTRAIN_CACHE:-$HOME/.cache/efftrain}/configure.log" 2>/dev/null | head -1)"

if [ "${EFFTRAIN_SKIP_TESTS:-0}" != 1 ]; then
  # EFFTRAIN_TEST_LABELS=gpu runs only the GPU-labelled tests (the CPU ones ran in CI).
  # EFFTRAIN_TEST_REGEX narrows them to the tests whose names match (ctest -R).
  ctest --test-dir build -L "^(${EFFTRAIN_TEST_LABELS:-cpu|gpu})\$" ${EFFTRAIN_TEST_REGEX:+-R "$EFFTRAIN_TEST_REGEX"} -j 8 \
    --output-on-failure > /tmp/tests.log 2>&1
  log "tests: $(grep -E 'tests passed|tests failed' /tmp/tests.log)"
  # Skipped tests (SKIP: one GPU where two are needed) are listed: a GPU test skipped on a GPU
  # machine is a failure that the test harness read as a skip.
  grep -A40 "The following tests did not run" /tmp/tests.log | sed '/^$/q' | tee -a "$OUT/summary.txt"
  if grep -q "The following tests FAILED" /tmp/tests.log; then
    cp /tmp/tests.log "$OUT/tests.log"
    grep -A30 "The following tests FAILED" /tmp/tests.log | tee -a "$OUT/summary.txt"
  fi
fi

if [ "${EFFTRAIN_SKIP_QUICKSTART:-0}" != 1 ]; then
  build/efftrain run experiments/quickstart.yaml --device cuda --out /tmp/quickstart --overwrite > /tmp/quickstart.log 2>&1
  log "quickstart on cuda: exit $? $(python3 -c "import json;j=json.load(open('/tmp/quickstart/report.json'));print(j['status'], j['environment']['device_name'], 'acc', j['quality']['final'], 'samples/s', round(j['throughput']['samples_per_s']))" 2>&1)"
fi

# The command each benchmark JSON records: the benchmark, its knobs, the tree it ran on.
source "$root/scripts/bench/provenance.sh"
knobs="$(bench_knobs)"
tree="$(bench_tree)"
for b in ${EFFTRAIN_BENCH:-}; do
  t1=$(date +%s)
  BENCH_COMMAND="${knobs}EFFTRAIN_BENCH=$b scripts/gpu-check.sh (tree $tree)" bash "scripts/bench/$b.sh" "$OUT" 2>&1 |
    tee -a "$OUT/summary.txt"
  log "bench $b: done in $(( $(date +%s) - t1 ))s"
done

# The device returns at most 8 files from $OUT: beyond that, everything but summary.txt goes back
# as one archive (tar xzf results.tgz where the files land).
n=$(find "$OUT" -type f | wc -l)
if [ "$n" -gt 8 ]; then
  (cd "$OUT" && find . -type f ! -name summary.txt ! -name results.tgz -print0 |
     tar czf results.tgz --null -T - --remove-files) &&
    find "$OUT" -mindepth 1 -type d -empty -delete &&
    log "packed $((n - 1)) files into results.tgz (the device returns at most 8 files)"
fi
