#!/usr/bin/env bash
# Issue 6: optimizer step time of adamw vs adamw_fused on GPT-2 small's and ResNet-50's
# parameters, and the adaptive-k estimator's per-step cost. Usage: optimizer.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
{
  echo '{"command": "EFFTRAIN_BENCH=optimizer scripts/gpu-check.sh", "runs": ['
  "$root/build/efftrain-bench" optimizer --model gpt2 --device cuda --iters 30
  echo ','
  "$root/build/efftrain-bench" optimizer --model resnet50 --device cuda --iters 30
  echo ']}'
} > "$out/optimizer_step.json"
python3 -c "
import json; j=json.load(open('$out/optimizer_step.json'))
for r in j['runs']: print(r['model'], r['device_name'], 'adamw %.2f ms  fused %.2f ms  x%.1f  adaptive %.3f ms' % (r['adamw_step_ms'], r['adamw_fused_step_ms'], r['fused_speedup'], r['adaptive_overhead_ms']))"
