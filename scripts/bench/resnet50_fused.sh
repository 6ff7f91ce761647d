#!/usr/bin/env bash
# Issue 5 follow-up: ResNet-50 b128 fp32 / fp16 / bf16 with channels_last and adamw_fused (the
# optimized recipe's optimizer), GPU-resident input. Usage: resnet50_fused.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
r=()
for p in fp32 fp16 bf16; do
  for c in none sqrt; do
    bench_run "r50f_${p}_${c}" experiments/bench/cifar10_resnet50_fp32.yaml --set task.data.input_path=device \
      --set task.model.channels_last=true --set optim.name=adamw_fused --set precision.mode=$p \
      --set checkpointing.policy=$c --set train.max_steps=40
    r+=("r50f_${p}_${c}")
  done
done
bench_collect "$out/cifar10_resnet50_fused.json" "ResNet-50 b128 channels_last + adamw_fused, precision x checkpointing" "${r[@]}"
