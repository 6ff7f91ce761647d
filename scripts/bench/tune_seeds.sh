#!/usr/bin/env bash
# Issue 9: `efftrain tune` of a task's baseline seed and of its hand-written optimized seed on
# one GPU, the same steps and time limit each. The optimized seed's "as-written" row is the
# hand-written configuration measured like every candidate, so the two tables compare the tuned
# winners with it and with the baseline on one card. TUNE_TASK: the seeds' prefix.
# Usage: TUNE_TASK=wikitext2_gpt2 tune_seeds.sh OUT_DIR
#          -> OUT_DIR/tune_${TUNE_TASK}_{baseline,optimized}.json, *_tuned.yaml
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
task="${TUNE_TASK:?name the seed prefix, e.g. TUNE_TASK=wikitext2_gpt2}"
export CUDA_VISIBLE_DEVICES=0
for seed in baseline optimized; do
  echo "--- tune experiments/seed/${task}_$seed.yaml --steps ${TUNE_STEPS:-12} --time ${TUNE_TIME:-200}"
  (cd "$root" && "$EFFTRAIN" tune "experiments/seed/${task}_$seed.yaml" --set "task.data.root=$DATA" \
     --steps "${TUNE_STEPS:-12}" --time "${TUNE_TIME:-200}" --out "$RUNS/tune_${task}_$seed") \
    > "$RUNS/tune_${task}_$seed.log" 2>&1 || { echo "    failed"; tail -5 "$RUNS/tune_${task}_$seed.log"; }
  cp "$RUNS/tune_${task}_$seed/tune.json" "$out/tune_${task}_$seed.json" 2>/dev/null
  cp "$RUNS/tune_${task}_$seed/tuned.yaml" "$out/tune_${task}_${seed}_tuned.yaml" 2>/dev/null
  python3 - "$RUNS/tune_${task}_$seed/tune.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print(f"  winner {j['winner']}")
for c in j["candidates"]:
    print(f"  {c['name']:<24} {c['outcome']:<14} {c['samples_per_s'] or 0:9.1f} {c['goodput'] or 0:9.1f} "
          f"{(c['peak_bytes'] or 0) / 2**30:6.2f} GiB {c['score'] or 0:6.3f} {c['verdict'][:50]}")
PY
done
