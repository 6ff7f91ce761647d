#!/usr/bin/env bash
# Issue 8, as far as one call allows: the four seed experiments (baseline and optimized, both
# tasks) at once, one per GPU, each capped at $EFFTRAIN_SEED_TIME_S (default 420) seconds of
# training (train.max_time_s), seed $EFFTRAIN_SEED (0). A baseline that does not reach its
# target in the cap gives a lower bound for its time-to-target. Writes the trimmed reports,
# efftrain compare tables and plots under OUT_DIR. Usage: seed_parallel.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
cap="${EFFTRAIN_SEED_TIME_S:-420}"
seed="${EFFTRAIN_SEED:-0}"
gpus="$(nvidia-smi -L | wc -l)"
runs=(wikitext2_gpt2_baseline wikitext2_gpt2_optimized cifar10_resnet50_baseline cifar10_resnet50_optimized)
i=0
for r in "${runs[@]}"; do
  CUDA_VISIBLE_DEVICES=$(( i % gpus )) bench_run "${r}_s$seed" "experiments/seed/$r.yaml" \
    --set train.max_time_s="$cap" --set train.seed="$seed" &
  i=$((i + 1))
  [ $(( i % gpus )) = 0 ] && wait
done
wait
mkdir -p "$out/seed_reports"
for r in "${runs[@]}"; do
  f="$RUNS/${r}_s$seed/report.json"
  [ -f "$f" ] || continue
  bench_trim "$f" "$out/seed_reports/${r}_s$seed.json"
done
for task in wikitext2_gpt2 cifar10_resnet50; do
  "$EFFTRAIN" compare "$RUNS/${task}_baseline_s$seed/report.json" "$RUNS/${task}_optimized_s$seed/report.json" \
    > "$out/seed_compare_$task.md" 2>&1
  cat "$out/seed_compare_$task.md"
  python3 "$root/scripts/plot.py" -o "$out/plots_$task" "$RUNS/${task}_baseline_s$seed/report.json" \
    "$RUNS/${task}_optimized_s$seed/report.json" > /dev/null 2>&1 || echo "    (no plots for $task)"
done
