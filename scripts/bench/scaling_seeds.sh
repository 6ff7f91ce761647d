#!/usr/bin/env bash
# Issue 11 (and 7): the seed experiments as written, at world sizes 1, 2 and 4 (as many as the
# machine has), the same per-GPU batch. The baseline seed (fp32 AdamW; ddp with several
# processes) and the optimized seed with the rest on (zero2, fp16 with loss scaling, adaptive
# accumulation, sqrt checkpointing, fused AdamW, the task's fast paths). Each point trains
# SCALING_TIME_S seconds (ResNet-50 25, GPT-2 45: its steps are long); the first optimizer
# steps are left out of the throughput: ResNet-50 70, past adaptive k's decisions at steps 20, 40
# and 60, GPT-2 25 (its steps at k 8 take over a second); and where k changes later than that (k
# settled at step 81 and 121 on four GPUs), the window starts again after the change
# (train.timing_restart_on_k_change; the JSON's window_restarts counts it).
# The 1-GPU runs get OMP_NUM_THREADS=1, as the launcher gives every worker.
# Then, for ResNet-50, a control: N copies of the 1-GPU optimized run at once, one per GPU, with no
# communication between them -- what running side by side costs before any gradient exchange.
#   SCALING_TASKS   "cifar10_resnet50 wikitext2_gpt2"   SCALING_CONFIGS "optimized baseline"
#   SCALING_WORLDS  "1 2 4"                             SCALING_INDEPENDENT 1 (0: no control)
#   SCALING_SET     "key=value ..." added to every run, SCALING_TAG then names its runs and JSONs
# The GPT-2 baseline (fp32, plain attention, b32 x 1024) needs ~80 GiB: it is left out, and
# said so, on a card with less than 100 GiB.
# Usage: scaling_seeds.sh OUT_DIR -> OUT_DIR/scaling_seeds_<task>_<config>.json (+ _independent)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
gpus="$(nvidia-smi -L | wc -l)"
mem_mib="$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)"
worlds=()
for w in ${SCALING_WORLDS:-1 2 4}; do [ "$gpus" -ge "$w" ] && worlds+=("$w"); done
tag="${SCALING_TAG:+_$SCALING_TAG}"
extra=()
for kv in ${SCALING_SET:-}; do extra+=(--set "$kv"); done
ran=()  # every run of this call, for the k lines at the end
common=(--set train.timing_restart_on_k_change=true "${extra[@]}" --set train.max_steps=0 --set train.eval_every=0
        --set train.eval_every_samples=0 --set train.stop_at_target=false --set task.data.eval_limit=1000)
for task in ${SCALING_TASKS:-cifar10_resnet50 wikitext2_gpt2}; do
  case "$task" in
    cifar10_resnet50) secs="${SCALING_TIME_S:-25}" warm=70 ;;
    *) secs="${SCALING_TIME_S:-45}" warm=25 ;;
  esac
  for cfg in ${SCALING_CONFIGS:-optimized baseline}; do
    if [ "$task/$cfg" = wikitext2_gpt2/baseline ] && [ "$mem_mib" -lt 100000 ]; then
      echo "--- skipped ${task}_${cfg}: the fp32 GPT-2 baseline needs ~80 GiB, this card has ${mem_mib} MiB"
      continue
    fi
    args=("experiments/seed/${task}_${cfg}.yaml" --set train.max_time_s="$secs" --set train.timing_warmup_steps="$warm"
          "${common[@]}")
    bench_series "scale_${task}_${cfg}${tag}" "${worlds[*]}" "${args[@]}"
    ran+=("${SERIES_NAMES[@]}")
    bench_collect "$out/scaling_seeds_${task}_${cfg}${tag}.json" \
      "$task $cfg seed as written${SCALING_SET:+ with $SCALING_SET}, world sizes ${worlds[*]}, same per-GPU batch" \
      "${SERIES_NAMES[@]}"
    if [ "$task/$cfg" = cifar10_resnet50/optimized ] && [ "${SCALING_INDEPENDENT:-1}" = 1 ] && [ "$gpus" -ge 2 ]; then
      n="${worlds[-1]}"
      ind=()
      for ((g = 0; g < n; ++g)); do
        CUDA_VISIBLE_DEVICES="$g" OMP_NUM_THREADS=1 bench_run "scale_${task}_${cfg}${tag}_alone_gpu$g" "${args[@]}" &
        ind+=("scale_${task}_${cfg}${tag}_alone_gpu$g")
      done
      wait
      ran+=("${ind[@]}")
      bench_collect "$out/scaling_seeds_${task}_${cfg}${tag}_independent.json" \
        "$task $cfg: $n independent 1-GPU runs at once (no communication), against the solo 1-GPU run" \
        "scale_${task}_${cfg}${tag}_1gpu" "${ind[@]}"
    fi
  done
done
# The adaptive k each point settled on (the work per exchanged gradient differs with it).
bench_k_lines "${ran[@]}"
