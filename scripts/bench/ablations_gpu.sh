#!/usr/bin/env bash
# Issue 8: the ablations on the GPU. For each task, the two seeds and every experiment in
# experiments/ablations/ (the optimized seed with one component off, the baseline with one on)
# through scripts/sweep.sh, ABLATION_TIME_S (30) seconds of training each, one evaluation at the
# end; the tasks run side by side, one GPU each (one GPU: in turn). With one GPU per run the zero2
# pair is left out (with one process it changes nothing; scaling_*.sh measures it).
# ABLATION_FILTER=REGEX keeps only the experiments whose file name matches (grep -E).
# The cap must outlast the start-up (cuDNN autotuning, graph capture): a run that ends within its
# first timing_warmup_steps reports start-up, not steady, throughput (check steady_steps).
# Writes OUT_DIR/ablations_<task>.json (collect.py's figures of every run) and ablations_compare_<task>.md.
# Usage: ablations_gpu.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
gpus="$(nvidia-smi -L | wc -l)"
i=0
for task in ${ABLATION_TASKS:-cifar10_resnet50 wikitext2_gpt2}; do
  exps=("experiments/seed/${task}_baseline.yaml" "experiments/seed/${task}_optimized.yaml")
  for f in experiments/ablations/"${task}"_*.yaml; do [[ "$f" == *zero2* ]] || exps+=("$f"); done
  if [ -n "${ABLATION_FILTER:-}" ]; then
    kept=(); for f in "${exps[@]}"; do basename "$f" | grep -Eq "$ABLATION_FILTER" && kept+=("$f"); done
    exps=("${kept[@]}")
  fi
  rm -rf "$RUNS/ablations_$task"
  [ ${#exps[@]} -gt 0 ] || continue
  CUDA_VISIBLE_DEVICES=$(( i % gpus )) EFFTRAIN="$EFFTRAIN" "$root/scripts/sweep.sh" -o "$RUNS/ablations_$task" "${exps[@]}" -- \
    --set "task.data.root=$DATA" --set train.max_time_s="${ABLATION_TIME_S:-30}" --set train.max_steps=0 \
    --set train.eval_every=0 --set train.eval_every_samples=0 --set train.stop_at_target=false \
    > "$RUNS/ablations_$task.log" 2>&1 &
  i=$((i + 1))
  [ $(( i % gpus )) = 0 ] && wait
done
wait
for task in ${ABLATION_TASKS:-cifar10_resnet50 wikitext2_gpt2}; do
  d="$RUNS/ablations_$task"
  [ -d "$d" ] || continue
  names=()
  for r in "$d"/*/report.json; do names+=("ablations_$task/$(basename "$(dirname "$r")")"); done
  bench_collect "$out/ablations_$task.json" "$task: the seeds and the ablations, ${ABLATION_TIME_S:-30} s of training each" "${names[@]}"
  cp "$d/compare.md" "$out/ablations_compare_$task.md" 2>/dev/null
  tail -3 "$RUNS/ablations_$task.log"
done
