#!/usr/bin/env bash
# Issue 12: efftrain against the same recipe in PyTorch (scripts/pytorch_reference.py, eager and
# torch.compile) on the same kind of card, bf16 + fused AdamW: GPT-2 small b32x1024 (SDPA) and
# ResNet-50/CIFAR b512 and b128 (channels_last). efftrain runs each twice: fast (ResNet-50:
# train.cuda_graph; GPT-2: the vocabulary padded to 128, the fused loss and the graph; listed first, the ratios
# are against it) and as before; PyTorch eager also runs GPT-2 with the same padding. With several GPUs the PyTorch runs go to GPUs
# 1.. while efftrain runs on GPU 0, at the same time (one card each). Usage: pytorch_vs_efftrain.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
gpus="$(nvidia-smi -L | wc -l)"
g() { echo $(( ($1) % gpus )); }
(
  bench_pytorch pt_gpt2_eager "$(g 1)" --task gpt2 --batch 32 --precision bf16 --steps 20 --warmup 5
  bench_pytorch pt_gpt2_compile "$(g 1)" --task gpt2 --batch 32 --precision bf16 --steps 20 --warmup 10 --compile
  bench_pytorch pt_gpt2_eager_pad "$(g 1)" --task gpt2 --batch 32 --precision bf16 --steps 20 --warmup 5 --vocab-multiple 128
) &
(
  bench_pytorch pt_r50_b512_eager "$(g 2)" --task resnet50 --batch 512 --precision bf16 --channels-last --steps 40 --warmup 10
  bench_pytorch pt_r50_b512_compile "$(g 2)" --task resnet50 --batch 512 --precision bf16 --channels-last --steps 40 --warmup 15 --compile
) &
(
  bench_pytorch pt_r50_b128_eager "$(g 3)" --task resnet50 --batch 128 --precision bf16 --channels-last --steps 100 --warmup 20
  bench_pytorch pt_r50_b128_compile "$(g 3)" --task resnet50 --batch 128 --precision bf16 --channels-last --steps 100 --warmup 20 --compile
) &
fast_r50=(experiments/bench/cifar10_resnet50_fp32.yaml --set precision.mode=bf16 --set optim.name=adamw_fused
          --set task.model.channels_last=true --set task.data.input_path=device --set train.timing_warmup_steps=20)
fast_gpt2=(experiments/bench/wikitext2_gpt2_fp32.yaml --set precision.mode=bf16 --set optim.name=adamw_fused
           --set task.model.attention=sdpa --set train.max_steps=25)
# GPT-2: the vocabulary padded to 128 (task.model.vocab_multiple), the fused loss and the graph; the same with
# selective recompute (the memory target); and none of them.
CUDA_VISIBLE_DEVICES=0 bench_run ef_gpt2_fast "${fast_gpt2[@]}" --set task.model.vocab_multiple=128 --set task.model.fused_loss=true \
  --set train.cuda_graph=true
CUDA_VISIBLE_DEVICES=0 bench_run ef_gpt2_fast_selective "${fast_gpt2[@]}" --set task.model.vocab_multiple=128 \
  --set task.model.fused_loss=true --set train.cuda_graph=true --set checkpointing.policy=selective
CUDA_VISIBLE_DEVICES=0 bench_run ef_gpt2 "${fast_gpt2[@]}"
for mode in graph eager; do
  graph=(--set train.cuda_graph=$([ $mode = graph ] && echo true || echo false))
  suffix=$([ $mode = graph ] && echo _graph)
  CUDA_VISIBLE_DEVICES=0 bench_run ef_r50_b512$suffix "${fast_r50[@]}" --set train.batch_size=512 --set train.max_steps=60 "${graph[@]}"
  CUDA_VISIBLE_DEVICES=0 bench_run ef_r50_b128$suffix "${fast_r50[@]}" --set train.batch_size=128 --set train.max_steps=150 "${graph[@]}"
done
wait
for pair in "gpt2:ef_gpt2_fast ef_gpt2_fast_selective ef_gpt2 pt_gpt2_eager pt_gpt2_eager_pad pt_gpt2_compile" \
            "r50_b512:ef_r50_b512_graph ef_r50_b512 pt_r50_b512_eager pt_r50_b512_compile" \
            "r50_b128:ef_r50_b128_graph ef_r50_b128 pt_r50_b128_eager pt_r50_b128_compile"; do
  key="${pair%%:*}"; names=(${pair#*:})
  bench_side_by_side "$out/pytorch_vs_efftrain_$key.json" "efftrain vs PyTorch, same recipe, bf16 + fused AdamW" "${names[@]}"
done
