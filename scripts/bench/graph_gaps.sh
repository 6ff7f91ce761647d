#!/usr/bin/env bash
# Issues 7/11: the ResNet-50 traces show the gaps between a replayed graph's nodes growing by about
# half once the process is one rank of an NCCL job, also where the graph communicates nothing.
# scripts/diag/graph_gaps.py reproduces that without efftrain: the same small graph replayed on
# one GPU alone, on every GPU at once without a process group, and on every GPU under torchrun
# with an NCCL process group (2 and, where there are four GPUs, 4 processes); then, at the largest
# world size, GAPS_VARIANTS (by default a group that never creates a communicator, a Gloo group,
# and NCCL with cuMem off, with P2P and shared memory off, and with PyTorch's watchdog monitoring
# off). GAPS_SIZES: tiny kernels (dispatch-bound) and medium ones (~4 us a node, ResNet-50's mean).
#   GAPS_WORLDS "2 4"   GAPS_SIZES "tiny medium"   GAPS_VARIANTS "NAME=MODE[:ENV=VALUE...] ..."
#   GAPS_BEFORE "peer hostfunc mapped stackN": also alone after that (graph_gaps.py --before)
# Usage: graph_gaps.sh OUT_DIR -> OUT_DIR/graph_gaps.json
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
gpus="$(nvidia-smi -L | wc -l)"
dir="$RUNS/graph_gaps"
rm -rf "$dir" && mkdir -p "$dir"
py="$root/scripts/diag/graph_gaps.py"
# group NAME N MODE SIZE [ENV=VALUE...]: N processes under torchrun, MODE's process group.
group() {
  local name="$1" n="$2" mode="$3" size="$4"; shift 4
  env "$@" torchrun --standalone --nproc-per-node "$n" "$py" --mode "$mode" --size "$size" \
    --out "$dir/${name}_rank%r.json" > "$dir/$name.log" 2>&1 ||
    { echo "    $name failed"; tail -5 "$dir/$name.log"; }
}
largest=1
for n in ${GAPS_WORLDS:-2 4}; do [ "$gpus" -ge "$n" ] && largest=$n; done
# At the largest world size, which part of an NCCL job, if any: NAME=MODE[:ENV=VALUE...] each.
variants="${GAPS_VARIANTS:-nccllazy=nccl_lazy gloo=gloo cumem0=nccl:NCCL_CUMEM_ENABLE=0
  p2pshm0=nccl:NCCL_P2P_DISABLE=1:NCCL_SHM_DISABLE=1
  nomonitor=nccl:TORCH_NCCL_ENABLE_MONITORING=0:TORCH_NCCL_ASYNC_ERROR_HANDLING=0}"
for size in ${GAPS_SIZES:-tiny medium}; do
  python3 "$py" --mode alone --size "$size" --out "$dir/${size}_alone.json"
  for b in ${GAPS_BEFORE:-}; do
    python3 "$py" --mode alone --before "$b" --size "$size" --out "$dir/${size}_alone_$b.json"
  done
  for n in ${GAPS_WORLDS:-2 4}; do
    [ "$gpus" -ge "$n" ] || continue
    at=$(( $(date +%s) + 15 ))  # every process's timed replays start at this second
    for ((g = 0; g < n; ++g)); do
      GAPS_START=$at GAPS_GPU=$g python3 "$py" --mode concurrent --size "$size" \
        --out "$dir/${size}_concurrent${n}_gpu$g.json" > /dev/null &
    done
    wait
    group "${size}_nccl$n" "$n" nccl "$size"
  done
  [ "$largest" -ge 2 ] || continue
  for v in $variants; do
    IFS=: read -r -a parts <<< "${v#*=}"
    group "${size}_${v%%=*}$largest" "$largest" "${parts[0]}" "$size" "${parts[@]:1}"
  done
done
python3 - "$out/graph_gaps.json" "$BENCH_COMMAND" "$dir"/*.json <<'PY'
import json, sys
out, command, files = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = []
for f in files:
    rows.append(json.load(open(f)))
    rows[-1]["file"] = f.rsplit("/", 1)[-1]
alone = {r["size"]: r["us_per_node"] for r in rows if r["mode"] == "alone" and r.get("before", "none") == "none"}
for r in rows:
    base = alone.get(r["size"])
    r["ratio_to_alone"] = r["us_per_node"] / base if base else None
    print(f"  {r['file']:<36} {r['replay_ms']:8.3f} ms/replay  {r['us_per_node']:6.3f} us/node"
          + (f"  x{r['ratio_to_alone']:.3f}" if base else "") + f"  launch {r.get('launch_us', 0):7.1f} us"
          + f"  stack {r.get('stack_limit_start')} -> {r.get('stack_limit_timed')}"
          + (f"  ({r['before_error']})" if r.get("before_error") else ""))
card = rows[0]["device_name"] if rows else "unknown"
json.dump({"title": "graph replay, alone vs concurrent vs NCCL job", "card": card, "command": command, "runs": rows},
          open(out, "w"), indent=1)
PY
