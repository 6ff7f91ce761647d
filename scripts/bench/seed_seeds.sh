#!/usr/bin/env bash
# Issue 8: the seed table -- each task's seed experiments over several seeds. Each seed runs the
# baseline, the optimized recipe (fp16) and its bf16 twin one after another on one GPU; the seeds
# spread over the machine's GPUs (the i-th seed on GPU i mod N); the tasks run one after the other.
# Each run stops at its target or after EFFTRAIN_SEED_TIME_S (400) seconds of training. Then
# `efftrain compare` groups the seeds of each task (median [min-max]).
#   SEED_TASKS="cifar10_resnet50 wikitext2_gpt2" (default: both), SEEDS="0 1 2" (default),
#   SEED_OPT_SETS="key=value ...": overrides for the two optimized configurations (shown in their reports)
# Usage: seed_seeds.sh OUT_DIR -> OUT_DIR/seeds_<task>/*.json, OUT_DIR/seeds_compare_<task>.md
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
seeds=(${SEEDS:-0 1 2})
cap="${EFFTRAIN_SEED_TIME_S:-400}"
gpus="$(nvidia-smi -L | wc -l)"
opt_sets=()
for kv in ${SEED_OPT_SETS:-}; do opt_sets+=(--set "$kv"); done
for task in ${SEED_TASKS:-cifar10_resnet50 wikitext2_gpt2}; do
  configs=("${task}_baseline" "${task}_optimized" "${task}_optimized_bf16")
  mkdir -p "$out/seeds_$task"
  i=0
  for s in "${seeds[@]}"; do
    (for c in "${configs[@]}"; do
       sets=(); [[ "$c" == *optimized* ]] && sets=("${opt_sets[@]}")
       CUDA_VISIBLE_DEVICES=$(( i % gpus )) bench_run "${c}_s$s" "experiments/seed/$c.yaml" \
         --set train.max_time_s="$cap" --set train.seed="$s" "${sets[@]}"
       # Trimmed as soon as it ends: what finished comes back even if the call is cut short.
       [ -f "$RUNS/${c}_s$s/report.json" ] && bench_trim "$RUNS/${c}_s$s/report.json" "$out/seeds_$task/${c}_s$s.json"
     done) &
    i=$((i + 1))
    [ $(( i % gpus )) = 0 ] && wait
  done
  wait
  reports=()
  for c in "${configs[@]}"; do
    for s in "${seeds[@]}"; do [ -f "$RUNS/${c}_s$s/report.json" ] && reports+=("$RUNS/${c}_s$s/report.json"); done
  done
  "$EFFTRAIN" compare "${reports[@]}" > "$out/seeds_compare_$task.md" 2>&1
  cat "$out/seeds_compare_$task.md"
done
