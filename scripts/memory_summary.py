#!/usr/bin/env python3
"""What is live at the peak of a CUDA caching allocator snapshot.

Reads the pickle that efftrain's train.memory_snapshot_steps writes (OUT/memory_snapshot.rank<r>.pickle)
or PyTorch's torch.cuda.memory._dump_snapshot (scripts/pytorch_reference.py --memory-snapshot), replays
its allocation trace (alloc / free_completed; blocks live before recording began and still live at the
dump are an offset under every point) and prints: the live bytes over the trace in buckets (max in each),
the peak, what is live there grouped by the allocating code (the innermost frames of `--frames`
matching `--match`, defaults efftrain's own code), and the largest live blocks.

Usage: memory_summary.py SNAPSHOT [--after FRACTION] [--frames N] [--match SUBSTR] [--json OUT]
  --after: look for the peak only in the trace's events from this fraction on (0.5: the second half;
           to leave a first step's autotuning or a graph capture out)
"""
import argparse
import collections
import json
import pickle
import re

GiB = 1024.0**3


def frame_key(frames, match, depth):
    names = []
    for f in frames or []:
        name = f.get("name", "")
        if match and match not in name and match not in f.get("filename", ""):
            continue
        name = re.sub(r"\(.*$", "", name)  # no argument lists
        if names and names[-1] == name:
            continue
        names.append(name)
        if len(names) == depth:
            break
    return " < ".join(names) if names else "(no matching frame)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("snapshot")
    ap.add_argument("--after", type=float, default=0.0)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--match", default="efftrain::")
    ap.add_argument("--buckets", type=int, default=24)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--json")
    a = ap.parse_args()
    with open(a.snapshot, "rb") as f:
        snap = pickle.load(f)
    traces = [t for t in snap["device_traces"] if t]
    if not traces:
        raise SystemExit(f"{a.snapshot}: no allocation trace (was history recorded?)")
    trace = traces[0]
    # Blocks live at the dump that the trace never allocated: live from before recording began.
    live_at_dump = {}
    for seg in snap["segments"]:
        addr = seg["address"]
        for b in seg["blocks"]:
            if b["state"] == "active_allocated":
                live_at_dump[addr] = b
            addr += b["size"]
    allocated_in_trace = set()
    live = {}
    cur = 0
    points = []
    for i, e in enumerate(trace):
        act = e["action"]
        if act == "alloc":
            live[e["addr"]] = e
            allocated_in_trace.add(e["addr"])
            cur += e["size"]
        elif act == "free_completed" and e["addr"] in live:
            cur -= live.pop(e["addr"])["size"]
        points.append(cur)
    before = {k: b for k, b in live_at_dump.items() if k not in allocated_in_trace}
    offset = sum(b["size"] for b in before.values())
    start = int(len(points) * a.after)
    peak_i = max(range(start, len(points)), key=lambda i: points[i])
    # Replay again to the peak for what is live there.
    live = {}
    for e in trace[: peak_i + 1]:
        if e["action"] == "alloc":
            live[e["addr"]] = e
        elif e["action"] == "free_completed":
            live.pop(e["addr"], None)
    groups = collections.defaultdict(lambda: [0, 0])
    for e in live.values():
        g = groups[frame_key(e.get("frames"), a.match, a.frames)]
        g[0] += e["size"]
        g[1] += 1
    if offset:
        groups["(live before recording began)"] = [offset, len(before)]
    peak = points[peak_i] + offset
    n = len(points)
    step = max(1, n // a.buckets)
    timeline = [(i, max(points[i : i + step]) + offset) for i in range(0, n, step)]
    print(f"{a.snapshot}: {n} events, peak {peak / GiB:.3f} GiB at event {peak_i} ({peak_i / n:.0%} of the trace"
          f"{f', searched from {a.after:.0%}' if a.after else ''}); {offset / GiB:.3f} GiB live before recording")
    print("timeline (max live per bucket of events):")
    for i, v in timeline:
        print(f"  {i:>8} {v / GiB:8.3f} GiB {'#' * int(60 * v / max(peak, 1))}")
    print(f"live at the peak by allocating code (innermost {a.frames} frames matching {a.match!r}):")
    ranked = sorted(groups.items(), key=lambda kv: -kv[1][0])
    for k, (b, c) in ranked:
        print(f"  {b / GiB:8.3f} GiB {c:6d} blocks  {k}")
    print(f"largest {a.top} live blocks:")
    biggest = sorted(live.values(), key=lambda e: -e["size"])[: a.top]
    for e in biggest:
        print(f"  {e['size'] / 2**20:10.1f} MiB  {frame_key(e.get('frames'), a.match, a.frames)}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"snapshot": a.snapshot, "events": n, "peak_bytes": peak, "peak_event": peak_i,
                       "before_recording_bytes": offset, "searched_from": a.after,
                       "groups": [{"code": k, "bytes": b, "blocks": c} for k, (b, c) in ranked],
                       "timeline": [{"event": i, "bytes": v} for i, v in timeline]}, f, indent=1)


if __name__ == "__main__":
    main()
