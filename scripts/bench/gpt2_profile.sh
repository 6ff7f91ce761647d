#!/usr/bin/env bash
# Issue 12: where GPT-2 small's step time goes, efftrain against PyTorch on the same card.
# bf16 + fused AdamW, b32 x 1024, vocabulary padded to 128 everywhere. efftrain: ATen loss,
# fused loss (task.model.fused_loss), fused loss + graph, each with a Kineto trace of steps 4-6
# (inside the timing warm-up, so the throughput is not touched); PyTorch eager and
# torch.compile (scripts/pytorch_reference.py --profile, after their timed steps). Then the
# fused-loss run with activation checkpointing (selective, also with the graph, and sqrt) for
# the memory target (<= 11 GiB at <= 10% throughput cost). With several GPUs the PyTorch runs go to GPU 1 at the same time.
# Usage: gpt2_profile.sh OUT_DIR    -> OUT_DIR/gpt2_profile.json, gpt2_profile_summary.json
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
gpus="$(nvidia-smi -L | wc -l)"
ptgpu=$(( gpus > 1 ? 1 : 0 ))
pt() {
  bench_pytorch pt_gpt2_eager_pad "$ptgpu" --profile "$RUNS/pt_gpt2_eager_pad.trace.json" --task gpt2 --batch 32 \
    --precision bf16 --steps 20 --warmup 5 --vocab-multiple 128
  bench_pytorch pt_gpt2_compile_pad "$ptgpu" --profile "$RUNS/pt_gpt2_compile_pad.trace.json" --task gpt2 --batch 32 \
    --precision bf16 --steps 20 --warmup 10 --compile --vocab-multiple 128
}
if [ "$gpus" -gt 1 ]; then pt & else pt; fi
gpt2=(experiments/bench/wikitext2_gpt2_fp32.yaml --set precision.mode=bf16 --set optim.name=adamw_fused
      --set task.model.attention=sdpa --set task.model.vocab_multiple=128 --set train.max_steps=30
      --set train.timing_warmup_steps=8 --set train.profile_start_step=4 --set train.profile_steps=3)
export CUDA_VISIBLE_DEVICES=0
bench_run ef_gpt2_pad "${gpt2[@]}"
bench_run ef_gpt2_fused "${gpt2[@]}" --set task.model.fused_loss=true
bench_run ef_gpt2_fused_graph "${gpt2[@]}" --set task.model.fused_loss=true --set train.cuda_graph=true
for c in selective selective_graph sqrt; do
  case $c in
    selective) ck=(--set checkpointing.policy=selective) ;;
    selective_graph) ck=(--set checkpointing.policy=selective --set train.cuda_graph=true) ;;
    sqrt) ck=(--set checkpointing.policy=sqrt) ;;
  esac
  bench_run ef_gpt2_fused_$c "${gpt2[@]}" --set task.model.fused_loss=true --set train.profile_start_step=0 "${ck[@]}"
done
wait
unset CUDA_VISIBLE_DEVICES
names=(ef_gpt2_fused_graph ef_gpt2_fused ef_gpt2_pad pt_gpt2_eager_pad pt_gpt2_compile_pad
       ef_gpt2_fused_selective ef_gpt2_fused_selective_graph ef_gpt2_fused_sqrt)
bench_side_by_side "$out/gpt2_profile.json" "GPT-2 small b32x1024 bf16, vocabulary padded to 128: efftrain vs PyTorch" "${names[@]}"
traces=()
for n in ef_gpt2_pad ef_gpt2_fused ef_gpt2_fused_graph; do
  [ -f "$RUNS/$n/profile/trace.rank0.json" ] && traces+=("$n=$RUNS/$n/profile/trace.rank0.json")
done
for n in pt_gpt2_eager_pad pt_gpt2_compile_pad; do
  [ -f "$RUNS/$n.trace.json" ] && traces+=("$n=$RUNS/$n.trace.json")
done
python3 "$root/scripts/profile_summary.py" --steps 3 --json "$out/gpt2_profile_summary.json" "${traces[@]}"
