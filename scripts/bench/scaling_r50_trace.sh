#!/usr/bin/env bash
# Issues 7/11: where ResNet-50's optimized seed loses about 5% per GPU with several processes even
# with one gradient exchange per 8 micro-batches (scaling_r50_rest.json, scaling_seeds_*.json).
# Runs the seed as written (adaptive k: 8 from step 21 or later) on 1 GPU and with zero2 on 2 and
# 4 GPUs (as many as the machine has), each with a Kineto trace of optimizer steps 100-102 (each 8
# graph-replayed micro-steps), per rank; then profile_summary.py puts GPU time per step by kernel
# class side by side, and trace_phases.py splits each step by phase (host time, GPU time, GPU idle
# waiting for the host) and compares the ranks' GPU arrival at each step's first collective.
# Usage: scaling_r50_trace.sh OUT_DIR -> OUT_DIR/scaling_r50_trace{,_summary,_phases}.json
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
args=(experiments/seed/cifar10_resnet50_optimized.yaml --set train.max_steps=110 --set train.timing_warmup_steps=30
      --set train.eval_every=0 --set train.eval_every_samples=0 --set train.stop_at_target=false
      --set task.data.eval_limit=1000 --set train.profile_start_step=100 --set train.profile_steps=3)
OMP_NUM_THREADS=1 bench_run r50_trace_1gpu "${args[@]}"
traces=("1gpu=$RUNS/r50_trace_1gpu/profile/trace.rank0.json")
names=(r50_trace_1gpu)
gpus="$(nvidia-smi -L | wc -l)"
for w in 2 4; do
  [ "$gpus" -ge "$w" ] || continue
  bench_run "r50_trace_${w}gpu_zero2" "${args[@]}" --nproc "$w"
  for ((r = 0; r < w; ++r)); do traces+=("${w}gpu_rank$r=$RUNS/r50_trace_${w}gpu_zero2/profile/trace.rank$r.json"); done
  names+=("r50_trace_${w}gpu_zero2")
done
bench_collect "$out/scaling_r50_trace.json" "ResNet-50 optimized seed, 1/2/4 GPUs, traced steps 100-102" "${names[@]}"
python3 "$root/scripts/profile_summary.py" --json "$out/scaling_r50_trace_summary.json" "${traces[@]}"
python3 "$root/scripts/trace_phases.py" --json "$out/scaling_r50_trace_phases.json" "${traces[@]}"
