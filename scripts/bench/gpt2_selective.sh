#!/usr/bin/env bash
# Issue 12's memory target: GPT-2 small b32 x 1024 bf16, the fast configuration (padded
# vocabulary, fused loss, graph) with and without checkpointing.policy=selective, alternated
# twice on one GPU, 40 steps each (10 untimed). Target: peak <= 11 GiB at <= 10% less throughput.
# Usage: gpt2_selective.sh OUT_DIR   -> OUT_DIR/gpt2_selective.json
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
fast=(experiments/bench/wikitext2_gpt2_fp32.yaml --set precision.mode=bf16 --set optim.name=adamw_fused
      --set task.model.attention=sdpa --set task.model.vocab_multiple=128 --set task.model.fused_loss=true
      --set train.cuda_graph=true --set train.max_steps=40 --set train.timing_warmup_steps=10)
export CUDA_VISIBLE_DEVICES=0
names=()
for rep in 1 2; do
  bench_run gpt2_fast_$rep "${fast[@]}"
  bench_run gpt2_selective_$rep "${fast[@]}" --set checkpointing.policy=selective
  names+=(gpt2_fast_$rep gpt2_selective_$rep)
done
bench_side_by_side "$out/gpt2_selective.json" \
  "GPT-2 small b32x1024 bf16 fast configuration, with and without selective recompute (alternated)" "${names[@]}"
