#!/usr/bin/env bash
# Issues 7/11: where an optimized seed loses time per GPU with several processes (ResNet-50 about
# 5% even with one gradient exchange per 8 micro-batches; scaling_seeds_*.json). Runs the seed as
# written on 1 GPU and with zero2 on 2 and 4 GPUs (as many as the machine has), each with a Kineto
# trace of optimizer steps 100-102, per rank; then profile_summary.py puts GPU time per step by
# kernel class side by side, and trace_phases.py splits each step by phase (host time, GPU time,
# GPU idle waiting for the host) and compares the ranks' GPU arrival at each step's first
# collective. TRACE_TASK: cifar10_resnet50 (default; files named scaling_r50_trace*) or
# wikitext2_gpt2 (scaling_gpt2_trace*). TRACE_WORLDS: the world sizes beside 1 (default "2 4").
# Usage: scaling_trace.sh OUT_DIR -> OUT_DIR/scaling_<r50|gpt2>_trace{,_summary,_phases}.json
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
task="${TRACE_TASK:-cifar10_resnet50}"
case "$task" in
  cifar10_resnet50) short=r50 ;;
  wikitext2_gpt2) short=gpt2 ;;
  *) echo "TRACE_TASK: cifar10_resnet50 or wikitext2_gpt2, not '$task'"; exit 2 ;;
esac
args=("experiments/seed/${task}_optimized.yaml" --set train.max_steps=110 --set train.timing_warmup_steps=30
      --set train.eval_every=0 --set train.eval_every_samples=0 --set train.stop_at_target=false
      --set task.data.eval_limit=1000 --set train.profile_start_step=100 --set train.profile_steps=3)
worlds="1"
for w in ${TRACE_WORLDS:-2 4}; do [ "$(nvidia-smi -L | wc -l)" -ge "$w" ] && worlds+=" $w"; done
bench_series "${short}_trace" "$worlds" "${args[@]}"
traces=()
for w in $worlds; do
  for ((r = 0; r < w; ++r)); do
    label="${w}gpu"; [ "$w" -gt 1 ] && label+="_rank$r"
    traces+=("$label=$RUNS/${short}_trace_${w}gpu/profile/trace.rank$r.json")
  done
done
bench_collect "$out/scaling_${short}_trace.json" "$task optimized seed over world sizes $worlds, traced steps 100-102" \
  "${SERIES_NAMES[@]}"
python3 "$root/scripts/profile_summary.py" --json "$out/scaling_${short}_trace_summary.json" "${traces[@]}"
python3 "$root/scripts/trace_phases.py" --json "$out/scaling_${short}_trace_phases.json" "${traces[@]}"
