#!/usr/bin/env bash
# Issue 5 follow-up: ResNet-50 b128 fp32 / fp16 / bf16 with channels_last and adamw_fused (the
# optimized recipe's optimizer), GPU-resident input. Usage: resnet50_fused.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_precision_grid r50f experiments/bench/cifar10_resnet50_fp32.yaml --set task.data.input_path=device \
  --set task.model.channels_last=true --set optim.name=adamw_fused --set train.max_steps=40
bench_collect "$1/cifar10_resnet50_fused.json" "ResNet-50 b128 channels_last + adamw_fused, precision x checkpointing" "${GRID_NAMES[@]}"
