#!/usr/bin/env bash
# Issue 12 in one command, every run on one GPU (GPU 0), one after another: efftrain's fast
# configurations against PyTorch's (scripts/pytorch_reference.py) with the same model, batch and
# precision, efftrain before and after each PyTorch run so that a drift of the card shows.
# - GPT-2 small b32 x 1024 bf16: the fast configuration (padded vocabulary, fused loss, fused
#   residual LayerNorms, CUDA graph, task.model.fused_gelu, task.model.matmul ISSUE12_GPT_MATMUL,
#   default tuned) against the same with ATen's matmuls or on an earlier tree's binary
#   (ISSUE12_BASE_BIN), torch.compile between the pairs; selective recompute (the <= 11 GiB
#   target); ISSUE12_CHUNKS, ISSUE12_EAGER_TRACE, ISSUE12_SDPA, ISSUE12_MATMUL: see below. Kineto
#   traces of steps 4-6 of the first run of each pair.
# - ResNet-50/CIFAR in each precision of ISSUE12_R50_PRECISIONS (default "bf16 fp16"; PyTorch's
#   fp16 runs with GradScaler, efftrain's with its dynamic loss scaling): channels_last, device
#   input, CUDA graph, the fused BatchNorm + ReLU by efftrain's kernels (task.model.bn_kernels),
#   task.model.conv_grads_in_place, task.model.recompute_bn_relu (ISSUE12_R50_RECOMPUTE=0: off);
#   b512 around torch.compile, beside it the same with cuDNN's
#   BatchNorm kernels or with ISSUE12_BASE_BIN the earlier tree's binary (traces of the first bf16
#   run of each); b128 against PyTorch eager (ISSUE12_R50_B128=0 leaves it out).
# ISSUE12_PARTS (default "gpt2 r50") picks the halves. Usage: issue12.sh OUT_DIR
#   -> OUT_DIR/issue12_gpt2.json, issue12_r50_b{512,128}_{bf16,fp16}.json, issue12_profile_summary.json
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
  # The pair beside the fast configuration: the same with ATen's matmuls (task.model.matmul=aten),
  # or with ISSUE12_BASE_BIN (an efftrain binary built from an earlier tree, ISSUE12_BASE_TREE
  # naming it) the same configuration on that tree. ISSUE12_CHUNKS: extra runs at those
  # task.model.head_chunk_rows.
  mm="${ISSUE12_GPT_MATMUL:-tuned}"
  gelu=(--set task.model.fused_gelu=true --set task.model.matmul="$mm")
  if [ -n "${ISSUE12_BASE_BIN:-}" ]; then
    other=gpt2_base_gelu
    run_other() { EFFTRAIN="$ISSUE12_BASE_BIN" bench_run "$@" "${gelu[@]}"; }
    title="this tree and ${ISSUE12_BASE_TREE:-an earlier tree} (fused_gelu, matmul $mm on both), torch.compile"
  else
    other=gpt2_gelu_aten_mm
    run_other() { bench_run "$@" --set task.model.fused_gelu=true --set task.model.matmul=aten; }
    title="efftrain's fast configuration with matmul $mm and with ATen's, torch.compile"
  fi
  bench_run gpt2_fast_gelu_1 "${gpt[@]}" "${gelu[@]}" "${trace[@]}"
  run_other ${other}_1 "${gpt[@]}" "${trace[@]}"
  bench_pytorch pt_gpt2_compile_pad 0 --task gpt2 --batch 32 --precision bf16 --steps 20 --warmup 10 --compile \
    --vocab-multiple 128
  run_other ${other}_2 "${gpt[@]}"
  bench_run gpt2_fast_gelu_2 "${gpt[@]}" "${gelu[@]}"
  bench_run gpt2_selective_gelu "${gpt[@]}" "${gelu[@]}" --set checkpointing.policy=selective
  extras=()
  for c in ${ISSUE12_CHUNKS:-}; do
    bench_run gpt2_fast_gelu_chunk$c "${gpt[@]}" "${gelu[@]}" --set task.model.head_chunk_rows=$c
    extras+=(gpt2_fast_gelu_chunk$c)
  done
  # ISSUE12_EAGER_TRACE=1: the fast configuration once more without the CUDA graph, traced, so
  # that profile_summary.py --ops can name the CPU ops behind each kernel (a replayed graph has
  # one launch for all of them).
  if [ "${ISSUE12_EAGER_TRACE:-0}" = 1 ]; then
    bench_run gpt2_eager_trace "${gpt[@]}" "${gelu[@]}" --set train.cuda_graph=false --set train.max_steps=10 \
      --set train.timing_warmup_steps=2 "${trace[@]}"
    python3 "$root/scripts/profile_summary.py" --steps 3 --ops --json "$out/issue12_gpt2_eager_ops.json" \
      "gpt2_eager=$RUNS/gpt2_eager_trace/profile/trace.rank0.json" | tail -45
  fi
  # ISSUE12_SDPA: extra runs with task.model.sdpa_backend set to each of these.
  for b in ${ISSUE12_SDPA:-}; do
    bench_run gpt2_fast_gelu_sdpa_$b "${gpt[@]}" "${gelu[@]}" --set task.model.sdpa_backend=$b
    extras+=(gpt2_fast_gelu_sdpa_$b)
  done
  # ISSUE12_MATMUL: extra runs with task.model.matmul set to each of these.
  for m in ${ISSUE12_MATMUL:-}; do
    bench_run gpt2_fast_gelu_matmul_$m "${gpt[@]}" "${gelu[@]}" --set task.model.matmul=$m
    extras+=(gpt2_fast_gelu_matmul_$m)
  done
  bench_side_by_side "$out/issue12_gpt2.json" "GPT-2 small b32x1024 bf16: $title" \
    gpt2_fast_gelu_1 ${other}_1 pt_gpt2_compile_pad ${other}_2 gpt2_fast_gelu_2 gpt2_selective_gelu "${extras[@]}"
  traces+=("gpt2_fast_gelu=$RUNS/gpt2_fast_gelu_1/profile/trace.rank0.json")
  traces+=("$other=$RUNS/${other}_1/profile/trace.rank0.json")
fi
if [[ " $parts " == *" r50 "* ]]; then
  for p in ${ISSUE12_R50_PRECISIONS:-bf16 fp16}; do
    r50=(experiments/bench/cifar10_resnet50_fp32.yaml --set precision.mode="$p" --set optim.name=adamw_fused
         --set task.model.channels_last=true --set task.data.input_path=device --set train.cuda_graph=true
         --set task.model.fused_bn_relu=true --set train.timing_warmup_steps=20)
    conv=(--set task.model.conv_grads_in_place=true)
    fast=("${conv[@]}" --set task.model.bn_kernels=efftrain
          --set task.model.recompute_bn_relu=$([ "${ISSUE12_R50_RECOMPUTE:-1}" = 1 ] && echo true || echo false))
    extra=()
    [ "$p" = bf16 ] && extra=("${trace[@]}")
    b512=(--set train.batch_size=512 --set train.max_steps=80)
    # The pair beside efftrain's b512 runs: the earlier tree's binary (ISSUE12_BASE_BIN, the same
    # settings: it must know them) or this one with cuDNN's BatchNorm kernels.
    if [ -n "${ISSUE12_BASE_BIN:-}" ]; then
      pair=base
      run_pair() { EFFTRAIN="$ISSUE12_BASE_BIN" bench_run "$@" "${fast[@]}"; }
    else
      pair=cudnnbn
      run_pair() { bench_run "$@" "${conv[@]}"; }
    fi
    bench_run ef_r50_b512_${p}_1 "${r50[@]}" "${fast[@]}" "${b512[@]}" "${extra[@]}"
    run_pair ${pair}_r50_b512_${p}_1 "${r50[@]}" "${b512[@]}" "${extra[@]}"
    bench_pytorch pt_r50_b512_${p}_compile 0 --task resnet50 --batch 512 --precision "$p" --channels-last --steps 60 \
      --warmup 20 --compile
    run_pair ${pair}_r50_b512_${p}_2 "${r50[@]}" "${b512[@]}"
    bench_run ef_r50_b512_${p}_2 "${r50[@]}" "${fast[@]}" "${b512[@]}"
    bench_side_by_side "$out/issue12_r50_b512_$p.json" \
      "ResNet-50 b512 $p: efftrain (efftrain's fused BatchNorm + ReLU, convolution gradients in place, recompute_bn_relu ${ISSUE12_R50_RECOMPUTE:-1}, CUDA graph) and $pair around torch.compile on one GPU" \
      ef_r50_b512_${p}_1 ${pair}_r50_b512_${p}_1 pt_r50_b512_${p}_compile ${pair}_r50_b512_${p}_2 ef_r50_b512_${p}_2
    [ "$p" = bf16 ] && traces+=("r50_${pair}_b512_bf16=$RUNS/${pair}_r50_b512_bf16_1/profile/trace.rank0.json")
    [ "${ISSUE12_R50_B128:-1}" = 1 ] || continue  # ISSUE12_R50_B128=0: batch 512 only
    bench_run ef_r50_b128_${p}_1 "${r50[@]}" "${fast[@]}" --set train.batch_size=128 --set train.max_steps=200
    bench_pytorch pt_r50_b128_${p}_eager 0 --task resnet50 --batch 128 --precision "$p" --channels-last --steps 100 \
      --warmup 20
    bench_run ef_r50_b128_${p}_2 "${r50[@]}" "${fast[@]}" --set train.batch_size=128 --set train.max_steps=200
    bench_side_by_side "$out/issue12_r50_b128_$p.json" \
      "ResNet-50 b128 $p: efftrain (efftrain's fused BatchNorm + ReLU, convolution gradients in place, recompute_bn_relu ${ISSUE12_R50_RECOMPUTE:-1}, CUDA graph) around PyTorch eager on one GPU" \
      ef_r50_b128_${p}_1 pt_r50_b128_${p}_eager ef_r50_b128_${p}_2
  done
  traces+=("r50_b512_bf16=$RUNS/ef_r50_b512_bf16_1/profile/trace.rank0.json")
fi
present=()
for t in "${traces[@]}"; do [ -f "${t#*=}" ] && present+=("$t"); done
[ ${#present[@]} -gt 0 ] && python3 "$root/scripts/profile_summary.py" --steps 3 --json "$out/issue12_profile_summary.json" \
  "${present[@]}"
exit 0
