#!/usr/bin/env bash
# Issues 7/11: the ResNet-50 traces show the gaps between a replayed graph's nodes growing by about
# half once the process is one rank of an NCCL job, also where the graph communicates nothing.
# scripts/diag/graph_gaps.py reproduces that without efftrain: the same small graph replayed on
# one GPU alone, on every GPU at once without a process group, and on every GPU under torchrun
# with an NCCL process group (2 and, where there are four GPUs, 4 processes).
# Usage: graph_gaps.sh OUT_DIR -> OUT_DIR/graph_gaps.json
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
gpus="$(nvidia-smi -L | wc -l)"
dir="$RUNS/graph_gaps"
rm -rf "$dir" && mkdir -p "$dir"
py="$root/scripts/diag/graph_gaps.py"
python3 "$py" --mode alone --out "$dir/alone.json"
for n in 2 4; do
  [ "$gpus" -ge "$n" ] || continue
  at=$(( $(date +%s) + 20 ))  # every process's timed replays start at this second
  for ((g = 0; g < n; ++g)); do
    GAPS_START=$at GAPS_GPU=$g python3 "$py" --mode concurrent --out "$dir/concurrent${n}_gpu$g.json" > /dev/null &
  done
  wait
  torchrun --standalone --nproc-per-node "$n" "$py" --mode nccl --out "$dir/nccl${n}_rank%r.json" > "$dir/nccl$n.log" 2>&1 ||
    { echo "    torchrun $n failed"; tail -5 "$dir/nccl$n.log"; }
done
python3 - "$out/graph_gaps.json" "$BENCH_COMMAND" "$dir"/*.json <<'PY'
import json, sys
out, command, files = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = []
for f in files:
    rows.append(json.load(open(f)))
    rows[-1]["file"] = f.rsplit("/", 1)[-1]
alone = [r for r in rows if r["mode"] == "alone"]
base = alone[0]["us_per_node"] if alone else None
for r in rows:
    r["ratio_to_alone"] = r["us_per_node"] / base if base else None
    print(f"  {r['file']:<28} {r['replay_ms']:8.3f} ms/replay  {r['us_per_node']:6.3f} us/node"
          + (f"  x{r['ratio_to_alone']:.3f}" if base else ""))
card = rows[0]["device_name"] if rows else "unknown"
json.dump({"title": "graph replay, alone vs concurrent vs NCCL job", "card": card, "command": command, "runs": rows},
          open(out, "w"), indent=1)
PY
