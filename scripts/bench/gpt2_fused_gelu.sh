#!/usr/bin/env bash
# Issue 12: GPT-2 small b32 x 1024 bf16, the fast configuration (padded vocabulary, fused loss,
# fused residual LayerNorms, CUDA graph) without and with task.model.fused_gelu (c_fc's bias and
# GELU in cuBLASLt's epilogue), alternated twice on one GPU, 40 steps (10 untimed); Kineto trace
# of steps 4-6 of the first pair. GPT2GELU_TAG names the outputs (default none).
# Usage: gpt2_fused_gelu.sh OUT_DIR -> OUT_DIR/gpt2_fused_gelu[_TAG].json, gpt2_fused_gelu[_TAG]_summary.json
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
tag="${GPT2GELU_TAG:+_$GPT2GELU_TAG}"
fast=(experiments/bench/wikitext2_gpt2_fp32.yaml --set precision.mode=bf16 --set optim.name=adamw_fused
      --set task.model.attention=sdpa --set task.model.vocab_multiple=128 --set task.model.fused_loss=true
      --set task.model.fused_norm=true --set train.cuda_graph=true --set train.max_steps=40
      --set train.timing_warmup_steps=10)
trace=(--set train.profile_start_step=4 --set train.profile_steps=3)
export CUDA_VISIBLE_DEVICES=0
names=()
for rep in 1 2; do
  extra=()
  [ $rep = 1 ] && extra=("${trace[@]}")
  bench_run gpt2_fast${tag}_$rep "${fast[@]}" "${extra[@]}"
  bench_run gpt2_fast_gelu${tag}_$rep "${fast[@]}" --set task.model.fused_gelu=true "${extra[@]}"
  names+=(gpt2_fast${tag}_$rep gpt2_fast_gelu${tag}_$rep)
done
bench_side_by_side "$out/gpt2_fused_gelu$tag.json" \
  "GPT-2 small b32x1024 bf16 fast configuration (fused residual LayerNorms) with and without cuBLASLt's GELU epilogue" \
  "${names[@]}"
python3 "$root/scripts/profile_summary.py" --steps 3 --json "$out/gpt2_fused_gelu${tag}_summary.json" \
  "fast=$RUNS/gpt2_fast${tag}_1/profile/trace.rank0.json" "fast_gelu=$RUNS/gpt2_fast_gelu${tag}_1/profile/trace.rank0.json"
