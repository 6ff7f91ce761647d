#!/usr/bin/env bash
# Issue 5: same run, same batch: fp32 / fp16 / bf16, each without and with sqrt checkpointing,
# for GPT-2 small (b32 x 1024, SDPA attention) and ResNet-50 (b128, GPU-resident input).
# Usage: precision_checkpointing.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
g=() r=()
for p in fp32 fp16 bf16; do
  for c in none sqrt; do
    bench_run "gpt2_${p}_${c}" experiments/bench/wikitext2_gpt2_fp32.yaml --set task.model.attention=sdpa \
      --set precision.mode=$p --set checkpointing.policy=$c
    g+=("gpt2_${p}_${c}")
    bench_run "r50_${p}_${c}" experiments/bench/cifar10_resnet50_fp32.yaml --set task.data.input_path=device \
      --set precision.mode=$p --set checkpointing.policy=$c --set train.max_steps=40
    r+=("r50_${p}_${c}")
  done
done
bench_collect "$out/wikitext2_gpt2_precision_checkpointing.json" "GPT-2 small b32x1024 precision x checkpointing" "${g[@]}"
bench_collect "$out/cifar10_resnet50_precision_checkpointing.json" "ResNet-50 b128 precision x checkpointing" "${r[@]}"
