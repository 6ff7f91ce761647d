# Shared by scripts/bench/*.sh: run efftrain experiments and collect their reports.
#   bench_run NAME EXPERIMENT [efftrain run args...]   -> $RUNS/NAME/report.json
#   bench_pytorch NAME GPU [pytorch_reference.py args...] -> $RUNS/NAME/report.json (that GPU)
#   bench_collect OUT.json TITLE NAME...                 -> one JSON with the key figures
#   bench_side_by_side OUT.json TITLE NAME...            -> efftrain and PyTorch runs side by side
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUNS="${RUNS:-/tmp/efftrain-bench}"
mkdir -p "$RUNS"
EFFTRAIN="$root/build/efftrain"
DATA="${EFFTRAIN_DATA:-$root/.data/prepared}"
# The command the JSONs record: gpu-check.sh's, or this script run on its own with its knobs.
source "$root/scripts/bench/provenance.sh"
BENCH_COMMAND="${BENCH_COMMAND:-$(bench_knobs)bash scripts/bench/$(basename "$0") OUT_DIR (tree $(bench_tree))}"

bench_run() {
  local name="$1" exp="$2"; shift 2
  echo "--- $name: efftrain run $exp $*"
  [ "${BENCH_GPU_SAMPLE:-0}" = 1 ] && gpu_sample_start "$RUNS/$name"
  (cd "$root" && "$EFFTRAIN" run "$exp" --out "$RUNS/$name" --overwrite --set "task.data.root=$DATA" "$@") \
    > "$RUNS/$name.log" 2>&1
  local rc=$?
  [ "${BENCH_GPU_SAMPLE:-0}" = 1 ] && gpu_sample_stop "$RUNS/$name"
  [ $rc = 0 ] || { echo "    exit $rc"; tail -5 "$RUNS/$name.log"; }
  return 0
}

# BENCH_GPU_SAMPLE=1: every GPU's SM clock, power, temperature, utilization and clock-event
# reasons twice a second during each run, and once, 15 s in, which processes hold a context on
# which GPU; one summary line per GPU after the run (scripts/bench/gpu_sample.py).
gpu_sample_start() {
  nvidia-smi --query-gpu=index,clocks.sm,power.draw,temperature.gpu,utilization.gpu,clocks_event_reasons.active \
    --format=csv,noheader,nounits -lms 500 > "$1.gpu.csv" 2>&1 &
  GPU_SAMPLER=$!
  (sleep 15 && nvidia-smi --query-compute-apps=pid,gpu_bus_id,used_memory --format=csv,noheader > "$1.apps.csv" 2>&1) &
  GPU_APPS=$!
}
gpu_sample_stop() {
  kill "$GPU_SAMPLER" "$GPU_APPS" 2>/dev/null
  wait "$GPU_SAMPLER" "$GPU_APPS" 2>/dev/null
  python3 "$root/scripts/bench/gpu_sample.py" "$1.gpu.csv" "$1.apps.csv"
}

bench_pytorch() {
  local name="$1" gpu="$2"; shift 2
  echo "--- $name: pytorch_reference.py $*"
  CUDA_VISIBLE_DEVICES="$gpu" python3 "$root/scripts/pytorch_reference.py" --out "$RUNS/$name/report.json" --name "$name" "$@" \
    > "$RUNS/$name.log" 2>&1 || { echo "    failed"; tail -5 "$RUNS/$name.log"; }
  return 0
}

# The runs that left a report (a failed one is named in its log above).
bench_side_by_side() {
  local out="$1" title="$2"; shift 2
  local reports=()
  for n in "$@"; do [ -f "$RUNS/$n/report.json" ] && reports+=("$RUNS/$n/report.json"); done
  python3 "$root/scripts/bench/side_by_side.py" "$out" "$title" "$BENCH_COMMAND" "${reports[@]}"
}

bench_collect() {
  local out="$1" title="$2"; shift 2
  local reports=()
  for n in "$@"; do reports+=("$RUNS/$n/report.json"); done
  python3 "$root/scripts/collect.py" "$out" "$title" "$BENCH_COMMAND" "${reports[@]}"
}

# bench_series PREFIX "WORLD SIZES" EXPERIMENT [efftrain run args...]: one run per world size as
# PREFIX_<w>gpu, the 1-GPU run with OMP_NUM_THREADS=1 (as the launcher gives every worker), the
# others with --nproc w; their names go to SERIES_NAMES.
bench_series() {
  local prefix="$1" worlds="$2"; shift 2
  SERIES_NAMES=()
  for w in $worlds; do
    if [ "$w" = 1 ]; then OMP_NUM_THREADS=1 bench_run "${prefix}_${w}gpu" "$@"
    else bench_run "${prefix}_${w}gpu" "$@" --nproc "$w"; fi
    SERIES_NAMES+=("${prefix}_${w}gpu")
  done
}

# bench_precision_grid PREFIX EXPERIMENT [efftrain run args...]: runs fp32/fp16/bf16 x
# checkpointing none/sqrt (GRID_POLICIES="none sqrt sqrt_balanced" adds placements,
# GRID_PRECISIONS="fp32 fp16" narrows the precisions) as PREFIX_<precision>_<policy>; their
# names go to GRID_NAMES.
bench_precision_grid() {
  local prefix="$1" exp="$2"; shift 2
  GRID_NAMES=()
  for p in ${GRID_PRECISIONS:-fp32 fp16 bf16}; do
    for c in ${GRID_POLICIES:-none sqrt}; do
      bench_run "${prefix}_${p}_${c}" "$exp" "$@" --set precision.mode=$p --set checkpointing.policy=$c
      GRID_NAMES+=("${prefix}_${p}_${c}")
    done
  done
}

# bench_k_lines NAME...: one line per run that left a report -- status, samples/s, gradient sync,
# adaptive k's history (the work per exchanged gradient depends on it) and whether the CUDA graph ran.
bench_k_lines() {
  for n in "$@"; do
    [ -f "$RUNS/$n/report.json" ] || continue
    python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
o = j["optimizations"]
print(sys.argv[2], j["status"], round(j["throughput"]["samples_per_s"], 1), "samples/s", "sync", o["grad_sync"].get("name"),
      "k", [(h["step"], h["k"]) for h in o.get("accumulation", {}).get("k_history", [])],
      "graph", o.get("cuda_graph", {}).get("enabled"))' "$RUNS/$n/report.json" "$n" 2>&1
  done
}

# bench_trim REPORT.json OUT.json: the report without its config (the overrides stay), for docs/results/.
bench_trim() {
  python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
j["experiment"].pop("config", None)
json.dump(j, open(sys.argv[2], "w"), indent=1)' "$1" "$2"
}
