#!/usr/bin/env bash
# Issue 3: ResNet-50/CIFAR-10 fp32 at batch 128 and 512: host loader vs GPU-resident path vs
# device-resident random tensors (the model alone). Usage: resnet50_input.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
names=()
for b in 128 512; do
  for p in fixed device host; do
    bench_run "r50_fp32_b${b}_${p}" experiments/bench/cifar10_resnet50_fp32.yaml \
      --set train.batch_size=$b --set task.data.input_path=$p
    names+=("r50_fp32_b${b}_${p}")
  done
done
bench_collect "$out/cifar10_resnet50_input.json" "ResNet-50/CIFAR-10 fp32 input paths" "${names[@]}"
