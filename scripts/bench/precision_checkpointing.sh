#!/usr/bin/env bash
# Issue 5: same run, same batch: fp32 / fp16 / bf16, each without and with sqrt checkpointing,
# for GPT-2 small (b32 x 1024, SDPA attention) and ResNet-50 (b128, GPU-resident input).
# PC_TASKS="gpt2 r50" picks the tasks, PC_TAG suffixes the JSONs' names; GRID_POLICIES and
# GRID_PRECISIONS (common.sh) change the grid. Usage: precision_checkpointing.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tasks=" ${PC_TASKS:-gpt2 r50} "
tag="${PC_TAG:+_$PC_TAG}"
if [[ "$tasks" == *" gpt2 "* ]]; then
  bench_precision_grid gpt2 experiments/bench/wikitext2_gpt2_fp32.yaml --set task.model.attention=sdpa
  bench_collect "$1/wikitext2_gpt2_precision_checkpointing$tag.json" "GPT-2 small b32x1024 precision x checkpointing" \
    "${GRID_NAMES[@]}"
fi
if [[ "$tasks" == *" r50 "* ]]; then
  bench_precision_grid r50 experiments/bench/cifar10_resnet50_fp32.yaml --set task.data.input_path=device \
    --set train.max_steps=40
  bench_collect "$1/cifar10_resnet50_precision_checkpointing$tag.json" "ResNet-50 b128 precision x checkpointing" \
    "${GRID_NAMES[@]}"
fi
