#!/usr/bin/env bash
# Issue 12: ResNet-50/CIFAR with cuDNN's fused BatchNorm + (add +) ReLU (task.model.fused_bn_relu)
# against the separate ATen ops and against torch.compile, same recipe: channels_last, fused AdamW,
# device input, the CUDA-graph micro-step, b512 and b128, in each precision of R50BN_PRECISIONS
# (default "fp16 bf16"; the report's model.bn_kernel says whether the fused kernels ran). efftrain
# runs on GPU 0, the PyTorch runs (scripts/pytorch_reference.py) of each precision on a GPU of their
# own at the same time (1, 2, ...), or after efftrain on GPU 0 where the machine has too few. Ratios
# are against each table's first row (efftrain fused). Usage: r50_fused_bn.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
gpus="$(nvidia-smi -L | wc -l)"
precisions="${R50BN_PRECISIONS:-fp16 bf16}"
# One precision's PyTorch runs on GPU $1 (b512, then b128).
pytorch_runs() {
  local p="$1" gpu="$2"
  for b in 512 128; do
    bench_pytorch "pt_r50_b${b}_${p}_compile" "$gpu" --task resnet50 --batch "$b" --precision "$p" \
      --channels-last --steps $(( b == 512 ? 40 : 100 )) --warmup 20 --compile
  done
}
i=0
for p in $precisions; do  # beside efftrain, each precision on a GPU of its own while there are enough
  i=$((i + 1))
  [ "$gpus" -gt "$i" ] && pytorch_runs "$p" "$i" &
done
for p in $precisions; do
  for b in 512 128; do
    for fused in true false; do
      CUDA_VISIBLE_DEVICES=0 bench_run "ef_r50_b${b}_${p}_$([ $fused = true ] && echo fused || echo ops)" \
        experiments/bench/cifar10_resnet50_fp32.yaml --set precision.mode="$p" --set optim.name=adamw_fused \
        --set task.model.channels_last=true --set task.data.input_path=device --set train.cuda_graph=true \
        --set train.batch_size="$b" --set train.max_steps=$(( b == 512 ? 60 : 150 )) --set train.timing_warmup_steps=20 \
        --set task.model.fused_bn_relu="$fused"
    done
  done
done
wait
i=0
for p in $precisions; do  # where there were too few GPUs: after efftrain, on GPU 0
  i=$((i + 1))
  [ "$gpus" -gt "$i" ] || pytorch_runs "$p" 0
done
for p in $precisions; do
  for b in 512 128; do
    bench_side_by_side "$out/r50_fused_bn_b${b}_${p}.json" \
      "ResNet-50 b$b $p: cuDNN fused BatchNorm + ReLU, the separate ops, torch.compile" \
      "ef_r50_b${b}_${p}_fused" "ef_r50_b${b}_${p}_ops" "pt_r50_b${b}_${p}_compile"
  done
done
for p in $precisions; do
  for b in 512 128; do
    f="$RUNS/ef_r50_b${b}_${p}_fused/report.json"
    [ -f "$f" ] && echo "ef_r50_b${b}_${p}_fused bn_kernel: $(python3 -c "import json;print(json.load(open('$f'))['model'].get('bn_kernel'))")"
  done
done
