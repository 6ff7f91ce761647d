#!/usr/bin/env bash
# Issue 7: throughput on 1 and 2 GPUs with ddp and zero2 at the same per-GPU batch, and per-GPU
# peak memory, for ResNet-50 (b128/GPU) and GPT-2 small (b32x1024/GPU) in the optimized
# single-GPU recipe (bf16, adamw_fused, channels_last + GPU-resident input / SDPA). The 1-GPU
# baseline runs first with the default environment (scaling efficiency is against it), then
# with OMP_NUM_THREADS=1 as the launcher gives each worker. Usage: scaling_2gpu.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
r50=(experiments/bench/cifar10_resnet50_fp32.yaml --set precision.mode=bf16 --set optim.name=adamw_fused
     --set task.model.channels_last=true --set task.data.input_path=device
     --set train.max_steps=250 --set train.timing_warmup_steps=20)
gpt=(experiments/bench/wikitext2_gpt2_fp32.yaml --set precision.mode=bf16 --set optim.name=adamw_fused
     --set task.model.attention=sdpa --set train.max_steps=30)
for task in r50 gpt; do
  eval "args=(\"\${${task}[@]}\")"
  bench_run "${task}_1gpu" "${args[@]}"
  OMP_NUM_THREADS=1 bench_run "${task}_1gpu_omp1" "${args[@]}"
  names=("${task}_1gpu" "${task}_1gpu_omp1")
  for sync in ddp zero2; do
    bench_run "${task}_2gpu_${sync}" "${args[@]}" --nproc 2 --set distributed.grad_sync=$sync
    names+=("${task}_2gpu_${sync}")
  done
  bench_collect "$out/scaling_2gpu_${task}.json" "$task: 1 GPU vs 2 GPUs (ddp, zero2), same per-GPU batch" "${names[@]}"
done
