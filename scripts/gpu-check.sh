#!/usr/bin/env bash
# One call on the GPU machine: build with all cores, run the test suite (GPU tests included),
# the CUDA quickstart, and the benchmarks named in $EFFTRAIN_BENCH (space-separated names of
# scripts/bench/*.sh, default none); results go under $OUT (default ./gpu-out).
#   device: run command "scripts/gpu-check.sh"   (carry .data when benchmarks need real data)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$root/gpu-out}"
mkdir -p "$OUT"
cd "$root"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
log "GPU: $(head -1 "$OUT/gpu.txt") x $(wc -l < "$OUT/gpu.txt")"
t0=$(date +%s)
if ! EFFTRAIN_JOBS="$(nproc)" scripts/build.sh > "$OUT/build.log" 2>&1; then
  log "build FAILED"; tail -40 "$OUT/build.log"; exit 1
fi
log "build: $(( $(date +%s) - t0 ))s"

if [ "${EFFTRAIN_SKIP_TESTS:-0}" != 1 ]; then
  ctest --test-dir build -L "^(cpu|gpu)\$" -j 8 --output-on-failure > "$OUT/tests.log" 2>&1
  log "tests: $(grep -E 'tests passed|tests failed' "$OUT/tests.log")"
  grep -A3 "The following tests FAILED" "$OUT/tests.log" | tee -a "$OUT/summary.txt"
fi

if [ "${EFFTRAIN_SKIP_QUICKSTART:-0}" != 1 ]; then
  build/efftrain run experiments/quickstart.yaml --device cuda --out "$OUT/quickstart" --overwrite > "$OUT/quickstart.log" 2>&1
  log "quickstart on cuda: exit $? $(python3 -c "import json;j=json.load(open('$OUT/quickstart/report.json'));print(j['status'], j['environment']['device_name'], 'acc', j['quality']['final'], 'samples/s', round(j['throughput']['samples_per_s']))" 2>&1)"
fi

for b in ${EFFTRAIN_BENCH:-}; do
  t1=$(date +%s)
  bash "scripts/bench/$b.sh" "$OUT" >> "$OUT/bench.log" 2>&1
  log "bench $b: exit $? in $(( $(date +%s) - t1 ))s"
done
cat "$OUT/summary.txt"
