#!/usr/bin/env bash
# Issue 12, ResNet-50/CIFAR memory against PyTorch, every run on GPU 0 one after another, bf16:
# issue12.sh's fast configuration (channels_last, device input, CUDA graph, efftrain's fused
# BatchNorm + ReLU, conv_grads_in_place) with task.model.recompute_bn_relu and without it (its
# throughput cost and what it saves), around torch.compile (b512) and PyTorch eager (b128); the
# fast configuration with the same input as PyTorch's (task.data.input_path=fixed: one batch
# resident, not the 50,000-image set); and allocator snapshots of the fast configuration with the
# graph and without it and of torch.compile's step, each summarized by scripts/memory_summary.py
# (what is live at the peak, by allocating code). Usage: r50_memory.sh OUT_DIR
#   -> OUT_DIR/r50_memory_b{512,128}.json, r50_memory_snapshots.txt (+ one JSON per snapshot)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
export CUDA_VISIBLE_DEVICES=0
r50=(experiments/bench/cifar10_resnet50_fp32.yaml --set precision.mode=bf16 --set optim.name=adamw_fused
     --set task.model.channels_last=true --set task.data.input_path=device --set train.cuda_graph=true
     --set task.model.fused_bn_relu=true --set task.model.bn_kernels=efftrain
     --set task.model.conv_grads_in_place=true --set train.timing_warmup_steps=20)
remake=(--set task.model.recompute_bn_relu=true)
b512=(--set train.batch_size=512 --set train.max_steps=80)
b128=(--set train.batch_size=128 --set train.max_steps=200)

bench_run r50_b512_remake_1 "${r50[@]}" "${remake[@]}" "${b512[@]}"
bench_run r50_b512_keep_1 "${r50[@]}" "${b512[@]}"
bench_pytorch pt_r50_b512_compile 0 --task resnet50 --batch 512 --precision bf16 --channels-last --steps 60 \
  --warmup 20 --compile --memory-snapshot "$RUNS/pt_r50_b512_compile.pickle"
bench_run r50_b512_keep_2 "${r50[@]}" "${b512[@]}"
bench_run r50_b512_remake_2 "${r50[@]}" "${remake[@]}" "${b512[@]}"
bench_run r50_b512_remake_fixed "${r50[@]}" "${remake[@]}" "${b512[@]}" --set task.data.input_path=fixed
bench_side_by_side "$out/r50_memory_b512.json" \
  "ResNet-50 b512 bf16: the fast configuration with recompute_bn_relu (remake) and without (keep) around torch.compile; remake with PyTorch's input (fixed)" \
  r50_b512_remake_1 r50_b512_keep_1 pt_r50_b512_compile r50_b512_keep_2 r50_b512_remake_2 r50_b512_remake_fixed

bench_run r50_b128_remake_1 "${r50[@]}" "${remake[@]}" "${b128[@]}"
bench_run r50_b128_keep "${r50[@]}" "${b128[@]}"
bench_pytorch pt_r50_b128_eager 0 --task resnet50 --batch 128 --precision bf16 --channels-last --steps 100 --warmup 20
bench_run r50_b128_remake_2 "${r50[@]}" "${remake[@]}" "${b128[@]}"
bench_run r50_b128_remake_fixed "${r50[@]}" "${remake[@]}" "${b128[@]}" --set task.data.input_path=fixed
bench_side_by_side "$out/r50_memory_b128.json" \
  "ResNet-50 b128 bf16: the fast configuration with recompute_bn_relu (remake) and without (keep) around PyTorch eager; remake with PyTorch's input (fixed)" \
  r50_b128_remake_1 r50_b128_keep pt_r50_b128_eager r50_b128_remake_2 r50_b128_remake_fixed

# Snapshots: 6 recorded steps (the first step's autotuning and the capture among them); the
# summaries search the peak over the whole trace and over its second half (the steady steps).
snap=(--set train.max_steps=6 --set train.memory_snapshot_steps=6 --set train.timing_warmup_steps=2)
bench_run snap_b512_remake_graph "${r50[@]}" "${remake[@]}" "${b512[@]}" "${snap[@]}"
bench_run snap_b512_remake_eager "${r50[@]}" "${remake[@]}" "${b512[@]}" "${snap[@]}" --set train.cuda_graph=false
bench_run snap_b512_keep_eager "${r50[@]}" "${b512[@]}" "${snap[@]}" --set train.cuda_graph=false
{
  for n in snap_b512_remake_graph snap_b512_remake_eager snap_b512_keep_eager; do
    f="$RUNS/$n/memory_snapshot.rank0.pickle"
    [ -f "$f" ] || { echo "$n: no snapshot"; continue; }
    python3 "$root/scripts/memory_summary.py" "$f" --json "$out/${n}.json"
    python3 "$root/scripts/memory_summary.py" "$f" --after 0.5 --top 10
  done
  f="$RUNS/pt_r50_b512_compile.pickle"
  [ -f "$f" ] && python3 "$root/scripts/memory_summary.py" "$f" --match .py --frames 2 --json "$out/snap_pt_compile.json"
} > "$out/r50_memory_snapshots.txt" 2>&1
tail -n 200 "$out/r50_memory_snapshots.txt"
exit 0
