#!/usr/bin/env bash
# Issue 12: the fused residual + dropout + LayerNorm kernels (task.model.fused_norm) on GPT-2
# small b32 x 1024 bf16, the fast configuration (padded vocabulary, fused loss, CUDA graph),
# with and without them, alternated twice on one GPU (40 steps, 10 untimed; the first pair with
# a Kineto trace of steps 4-6), then selective recompute with them (the <= 11 GiB target), and
# PyTorch's torch.compile of the same recipe on the same GPU after them (the 1.1x target).
# Usage: gpt2_fused_norm.sh OUT_DIR   -> OUT_DIR/gpt2_fused_norm.json, gpt2_fused_norm_summary.json
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
fast=(experiments/bench/wikitext2_gpt2_fp32.yaml --set precision.mode=bf16 --set optim.name=adamw_fused
      --set task.model.attention=sdpa --set task.model.vocab_multiple=128 --set task.model.fused_loss=true
      --set train.cuda_graph=true --set train.max_steps=40 --set train.timing_warmup_steps=10)
trace=(--set train.profile_start_step=4 --set train.profile_steps=3)
export CUDA_VISIBLE_DEVICES=0
names=()
for rep in 1 2; do
  extra=()
  [ $rep = 1 ] && extra=("${trace[@]}")
  bench_run gpt2_fast_$rep "${fast[@]}" "${extra[@]}"
  bench_run gpt2_fast_norm_$rep "${fast[@]}" --set task.model.fused_norm=true "${extra[@]}"
  names+=(gpt2_fast_$rep gpt2_fast_norm_$rep)
done
bench_run gpt2_selective "${fast[@]}" --set checkpointing.policy=selective
bench_run gpt2_selective_norm "${fast[@]}" --set task.model.fused_norm=true --set checkpointing.policy=selective
bench_pytorch pt_gpt2_compile_pad 0 --task gpt2 --batch 32 --precision bf16 --steps 20 --warmup 10 --compile \
  --vocab-multiple 128
names+=(gpt2_selective gpt2_selective_norm pt_gpt2_compile_pad)
bench_side_by_side "$out/gpt2_fused_norm.json" \
  "GPT-2 small b32x1024 bf16 fast configuration with and without the fused residual LayerNorms, and torch.compile" \
  "${names[@]}"
traces=()
for n in gpt2_fast_1 gpt2_fast_norm_1; do
  [ -f "$RUNS/$n/profile/trace.rank0.json" ] && traces+=("$n=$RUNS/$n/profile/trace.rank0.json")
done
python3 "$root/scripts/profile_summary.py" --steps 3 --json "$out/gpt2_fused_norm_summary.json" "${traces[@]}"
