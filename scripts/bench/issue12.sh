#!/usr/bin/env bash
# Issue 12 in one command, every run on one GPU (GPU 0), one after another: efftrain's fast
# configurations against PyTorch's (scripts/pytorch_reference.py) with the same model, batch and
# precision (bf16), efftrain before and after each PyTorch run so that a drift of the card shows.
# - GPT-2 small b32 x 1024: the fast configuration (padded vocabulary, fused loss, fused residual
#   LayerNorms, CUDA graph) without and with task.model.fused_dense, torch.compile between the
#   pairs; selective recompute with fused_dense (the <= 11 GiB target). Kineto trace of steps 4-6
#   of the first fused_dense run.
# - ResNet-50/CIFAR b512: channels_last, device input, CUDA graph, cuDNN's fused BatchNorm + ReLU,
#   torch.compile between two efftrain runs (trace of the first); b128: efftrain and PyTorch eager.
# ISSUE12_PARTS (default "gpt2 r50") picks the halves. Usage: issue12.sh OUT_DIR
#   -> OUT_DIR/issue12_gpt2.json, issue12_r50_b512.json, issue12_r50_b128.json, issue12_profile_summary.json
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
parts="${ISSUE12_PARTS:-gpt2 r50}"
export CUDA_VISIBLE_DEVICES=0
trace=(--set train.profile_start_step=4 --set train.profile_steps=3)
traces=()
if [[ " $parts " == *" gpt2 "* ]]; then
  gpt=(experiments/bench/wikitext2_gpt2_fp32.yaml --set precision.mode=bf16 --set optim.name=adamw_fused
       --set task.model.attention=sdpa --set task.model.vocab_multiple=128 --set task.model.fused_loss=true
       --set task.model.fused_norm=true --set train.cuda_graph=true --set train.max_steps=40
       --set train.timing_warmup_steps=10)
  bench_run gpt2_fast_1 "${gpt[@]}"
  bench_run gpt2_fast_dense_1 "${gpt[@]}" --set task.model.fused_dense=true "${trace[@]}"
  bench_pytorch pt_gpt2_compile_pad 0 --task gpt2 --batch 32 --precision bf16 --steps 20 --warmup 10 --compile \
    --vocab-multiple 128
  bench_run gpt2_fast_2 "${gpt[@]}"
  bench_run gpt2_fast_dense_2 "${gpt[@]}" --set task.model.fused_dense=true
  bench_run gpt2_selective_dense "${gpt[@]}" --set task.model.fused_dense=true --set checkpointing.policy=selective
  bench_side_by_side "$out/issue12_gpt2.json" \
    "GPT-2 small b32x1024 bf16: efftrain's fast configuration without and with the cuBLASLt epilogues, torch.compile" \
    gpt2_fast_dense_1 gpt2_fast_1 pt_gpt2_compile_pad gpt2_fast_2 gpt2_fast_dense_2 gpt2_selective_dense
  traces+=("gpt2_fast_dense=$RUNS/gpt2_fast_dense_1/profile/trace.rank0.json")
fi
if [[ " $parts " == *" r50 "* ]]; then
  r50=(experiments/bench/cifar10_resnet50_fp32.yaml --set precision.mode=bf16 --set optim.name=adamw_fused
       --set task.model.channels_last=true --set task.data.input_path=device --set train.cuda_graph=true
       --set task.model.fused_bn_relu=true --set train.timing_warmup_steps=20)
  bench_run ef_r50_b512_1 "${r50[@]}" --set train.batch_size=512 --set train.max_steps=80 "${trace[@]}"
  bench_pytorch pt_r50_b512_compile 0 --task resnet50 --batch 512 --precision bf16 --channels-last --steps 60 \
    --warmup 20 --compile
  bench_run ef_r50_b512_2 "${r50[@]}" --set train.batch_size=512 --set train.max_steps=80
  bench_run ef_r50_b128 "${r50[@]}" --set train.batch_size=128 --set train.max_steps=200
  bench_pytorch pt_r50_b128_eager 0 --task resnet50 --batch 128 --precision bf16 --channels-last --steps 100 --warmup 20
  bench_side_by_side "$out/issue12_r50_b512.json" \
    "ResNet-50 b512 bf16: efftrain (fused BatchNorm + ReLU, CUDA graph) around torch.compile on one GPU" \
    ef_r50_b512_1 pt_r50_b512_compile ef_r50_b512_2
  bench_side_by_side "$out/issue12_r50_b128.json" "ResNet-50 b128 bf16: efftrain and PyTorch eager on one GPU" \
    ef_r50_b128 pt_r50_b128_eager
  traces+=("r50_b512=$RUNS/ef_r50_b512_1/profile/trace.rank0.json")
fi
present=()
for t in "${traces[@]}"; do [ -f "${t#*=}" ] && present+=("$t"); done
[ ${#present[@]} -gt 0 ] && python3 "$root/scripts/profile_summary.py" --steps 3 --json "$out/issue12_profile_summary.json" \
  "${present[@]}"
exit 0
