#!/usr/bin/env bash
# Issue 5 follow-up: ResNet-50 b128 precision x checkpointing with channels_last (the layout
# Hopper's tensor cores want for convolutions), GPU-resident input. Usage: resnet50_channels_last.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
r=()
for p in fp32 fp16 bf16; do
  for c in none sqrt; do
    bench_run "r50cl_${p}_${c}" experiments/bench/cifar10_resnet50_fp32.yaml --set task.data.input_path=device \
      --set task.model.channels_last=true --set precision.mode=$p --set checkpointing.policy=$c --set train.max_steps=40
    r+=("r50cl_${p}_${c}")
  done
done
bench_collect "$out/cifar10_resnet50_channels_last.json" "ResNet-50 b128 channels_last precision x checkpointing" "${r[@]}"
