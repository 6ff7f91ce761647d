#!/usr/bin/env bash
# Issues 7/11: ResNet-50's optimized seed as written -- fp16 with dynamic loss scaling, adaptive
# accumulation, sqrt checkpointing, fused AdamW, device input, channels_last, the CUDA-graph
# micro-step, zero2 with several processes -- at 1, 2 (and 4) GPUs, b128 per GPU. Each world size
# runs once with the seed's adaptive k (which the gradient-noise estimate sets per world size) and
# once with k fixed at 2 (the same work per sample at every world size; with zero2 and with ddp).
# SCALING_TIME_S (25) seconds of training per point, the first 30 optimizer steps (k's first
# decision included) left out of the throughput. Usage: scaling_r50_rest.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
gpus="$(nvidia-smi -L | wc -l)"
args=(experiments/seed/cifar10_resnet50_optimized.yaml --set train.max_time_s="${SCALING_TIME_S:-25}"
      --set train.max_steps=0 --set train.timing_warmup_steps=30 --set train.eval_every=0
      --set train.eval_every_samples=0 --set train.stop_at_target=false --set task.data.eval_limit=1000)
fixed=(--set accumulation.mode=fixed --set accumulation.k=2)
names=()
for w in 1 2 4; do
  [ "$gpus" -ge "$w" ] || continue
  nproc=(); [ "$w" -gt 1 ] && nproc=(--nproc "$w")
  bench_run "r50_rest_${w}gpu_adaptive" "${args[@]}" "${nproc[@]}"
  bench_run "r50_rest_${w}gpu_k2" "${args[@]}" "${nproc[@]}" "${fixed[@]}"
  names+=("r50_rest_${w}gpu_adaptive" "r50_rest_${w}gpu_k2")
  if [ "$w" -gt 1 ]; then
    bench_run "r50_rest_${w}gpu_k2_ddp" "${args[@]}" "${nproc[@]}" "${fixed[@]}" --set distributed.auto_sync=ddp
    names+=("r50_rest_${w}gpu_k2_ddp")
  fi
done
bench_collect "$out/scaling_r50_rest.json" "ResNet-50 optimized seed as written (rest on) over world sizes, b128 per GPU" "${names[@]}"
bench_k_lines "${names[@]}"
