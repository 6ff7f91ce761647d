#!/usr/bin/env bash
# Issue 5 follow-up: ResNet-50 b128 precision x checkpointing with channels_last (the layout
# Hopper's tensor cores want for convolutions), GPU-resident input. Usage: resnet50_channels_last.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_precision_grid r50cl experiments/bench/cifar10_resnet50_fp32.yaml --set task.data.input_path=device \
  --set task.model.channels_last=true --set train.max_steps=40
bench_collect "$1/cifar10_resnet50_channels_last.json" "ResNet-50 b128 channels_last precision x checkpointing" "${GRID_NAMES[@]}"
