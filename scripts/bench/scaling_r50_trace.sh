#!/usr/bin/env bash
# Issues 7/11: where ResNet-50's optimized seed loses about 6% per GPU at two processes even with
# one gradient exchange per 8 micro-batches (scaling_r50_rest.json). Runs the seed as written
# (adaptive k: 8 from step 21) on 1 GPU and with zero2 on 2 GPUs, each with a Kineto trace of
# optimizer steps 60-62 (each 8 graph-replayed micro-steps), per rank; then profile_summary.py
# puts GPU time per step by kernel class, the GPU span and its idle fraction side by side.
# Not run yet (written when no device time was left): check first that the traces hold the
# graphs' kernels, not only their launches.
# Usage: scaling_r50_trace.sh OUT_DIR -> OUT_DIR/scaling_r50_trace.json, scaling_r50_trace_summary.json
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
args=(experiments/seed/cifar10_resnet50_optimized.yaml --set train.max_steps=90 --set train.timing_warmup_steps=30
      --set train.eval_every=0 --set train.eval_every_samples=0 --set train.stop_at_target=false
      --set task.data.eval_limit=1000 --set train.profile_start_step=60 --set train.profile_steps=3)
bench_run r50_trace_1gpu "${args[@]}"
traces=("1gpu=$RUNS/r50_trace_1gpu/profile/trace.rank0.json")
names=(r50_trace_1gpu)
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  bench_run r50_trace_2gpu_zero2 "${args[@]}" --nproc 2
  traces+=("2gpu_rank0=$RUNS/r50_trace_2gpu_zero2/profile/trace.rank0.json"
           "2gpu_rank1=$RUNS/r50_trace_2gpu_zero2/profile/trace.rank1.json")
  names+=(r50_trace_2gpu_zero2)
fi
bench_collect "$out/scaling_r50_trace.json" "ResNet-50 optimized seed, 1 vs 2 GPUs, traced steps 60-62" "${names[@]}"
python3 "$root/scripts/profile_summary.py" --json "$out/scaling_r50_trace_summary.json" "${traces[@]}"
