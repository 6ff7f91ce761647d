#!/usr/bin/env bash
# Nsight Compute's view of one kernel inside GPT-2's fast bf16 step (eager, no CUDA graph): the
# first launch after KERNEL_NCU_SKIP (default 6, past the warm-up) of the kernels whose names match
# KERNEL_NCU_REGEX (default ce_fused), for this tree's binary and, with ISSUE12_BASE_BIN, the base
# binary's, one after the other on GPU 0. Clocks left alone (--clock-control none, METHOD.md).
# Usage: kernel_ncu.sh OUT_DIR -> OUT_DIR/ncu_<name>.txt
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
mkdir -p "$out"
export CUDA_VISIBLE_DEVICES=0
regex="${KERNEL_NCU_REGEX:-ce_fused}"
gpt=(experiments/bench/wikitext2_gpt2_fp32.yaml --set precision.mode=bf16 --set optim.name=adamw_fused
     --set task.model.attention=sdpa --set task.model.vocab_multiple=128 --set task.model.fused_loss=true
     --set task.model.fused_norm=true --set task.model.fused_gelu=true --set train.max_steps=5
     --set train.timing_warmup_steps=1 --set "task.data.root=$DATA")
profile() {
  local name="$1" bin="$2"
  (cd "$root" && ncu --clock-control none -k "regex:$regex" --launch-skip "${KERNEL_NCU_SKIP:-6}" --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
    --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
    "$bin" run "${gpt[@]}" --out "$RUNS/ncu_$name" --overwrite) > "$out/ncu_$name.txt" 2>&1
  echo "--- ncu $name ($bin): exit $?"
  grep -E "Duration|DRAM Throughput|Memory Throughput|Compute \(SM\) Throughput|Issue Slots Busy|Executed Ipc A|No Eligible|Warp Cycles Per Issued|Achieved Occupancy|Registers Per|Block Size|Grid Size" \
    "$out/ncu_$name.txt" | head -20
}
profile this "$EFFTRAIN"
[ -n "${ISSUE12_BASE_BIN:-}" ] && profile base "$ISSUE12_BASE_BIN"
exit 0
