#!/usr/bin/env python3
"""Where the time of a profiled optimizer step goes, phase by phase, from efftrain's Chrome traces
(train.profile_start_step): the trainer marks each step's phases (efftrain::zero_grad,
micro_step, grad_sync, optimizer, after_step) as user annotations, and every GPU kernel is
charged to the phase whose host range launched it (by the launch's correlation id). Per phase
and step: host ms, GPU busy ms, and the GPU idle time before its kernels, split into time the GPU
waited for the host to launch them ("host") and the rest (dependencies, gaps inside a CUDA graph,
waits on another stream); the micro-steps also one by one, by their place in the step (the last
one communicates); then the kernel pairs with the most idle time between them. NCCL
kernels are listed on their own: their time includes waiting for the other ranks. Traces named
RUN_rankN are the ranks of one run: the GPU arrival of each at the step's first collective is
compared (the traces' clocks aligned by baseTimeNanoseconds).

usage: trace_phases.py [--json OUT] NAME=TRACE.json [NAME=TRACE.json ...]
"""
import argparse
import bisect
import collections
import json

from profile_summary import DEVICE_CATS, read_trace

RUNTIME_CATS = ("cuda_runtime", "cuda_driver")
PREFIX = "efftrain::"


def analyze(path):
    events, base_us = read_trace(path)
    phases = sorted((e for e in events if e.get("ph") == "X" and e.get("cat") == "user_annotation"
                     and e.get("name", "").startswith(PREFIX)), key=lambda e: e["ts"])
    launch = {}
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in RUNTIME_CATS and "correlation" in e.get("args", {}):
            launch[e["args"]["correlation"]] = e["ts"]
    device = sorted((e for e in events if e.get("ph") == "X" and e.get("cat") in DEVICE_CATS), key=lambda e: e["ts"])
    starts = [p["ts"] for p in phases]

    def phase_of(ts):
        i = bisect.bisect_right(starts, ts) - 1
        if i >= 0 and ts <= phases[i]["ts"] + phases[i]["dur"]:
            return i
        return None

    steps = sum(1 for p in phases if p["name"] == PREFIX + "zero_grad") or 1
    # Each micro_step range's place in its step (0 .. k-1): the last one communicates.
    micro_index, i_in_step = {}, 0
    for i, p in enumerate(phases):
        if p["name"] == PREFIX + "zero_grad":
            i_in_step = 0
        elif p["name"] == PREFIX + "micro_step":
            micro_index[i] = i_in_step
            i_in_step += 1
    by_micro = collections.defaultdict(collections.Counter)
    rows = collections.defaultdict(lambda: collections.Counter())
    for p in phases:
        r = rows[p["name"][len(PREFIX):]]
        r["host_ms"] += p["dur"] / 1000.0
        r["ranges"] += 1
    nccl = collections.Counter()
    nccl_n = collections.Counter()
    # Steps begin at their zero_grad range; the first collective launched in each step is where
    # the ranks meet: its GPU start is each rank's arrival (an early rank's kernel then waits).
    step_starts = [p["ts"] for p in phases if p["name"] == PREFIX + "zero_grad"]
    first_coll = {}  # step index -> (GPU start, host launch) of its first NCCL kernel
    gaps = collections.Counter()  # (phase, kernel before, kernel after) -> idle us
    gap_n = collections.Counter()
    busy_end, last = None, None
    for e in device:
        corr = e.get("args", {}).get("correlation")
        lt = launch.get(corr)
        pi = phase_of(lt) if lt is not None else None
        name = phases[pi]["name"][len(PREFIX):] if pi is not None else "(outside)"
        r = rows[name]
        m = by_micro[micro_index[pi]] if pi in micro_index else collections.Counter()
        r["kernels"] += 1
        r["gpu_ms"] += e["dur"] / 1000.0
        m["gpu_ms"] += e["dur"] / 1000.0
        is_nccl = "nccl" in e["name"].lower()
        if is_nccl:
            key = e["name"].split("(")[0][:60]
            nccl[key] += e["dur"] / 1000.0
            nccl_n[key] += 1
        if busy_end is not None and e["ts"] > busy_end:
            gap = e["ts"] - busy_end
            host = max(0.0, min(lt, e["ts"]) - busy_end) if lt is not None else 0.0
            r["idle_host_ms"] += host / 1000.0
            r["idle_other_ms"] += (gap - host) / 1000.0
            m["idle_host_ms"] += host / 1000.0
            m["idle_other_ms"] += (gap - host) / 1000.0
            key = (name, last["name"][:50], e["name"][:50])
            gaps[key] += gap
            gap_n[key] += 1
        if is_nccl and lt is not None and step_starts and lt >= step_starts[0]:
            si = bisect.bisect_right(step_starts, lt) - 1
            if si not in first_coll or lt < first_coll[si][1]:
                first_coll[si] = (e["ts"], lt)
        if busy_end is None or e["ts"] + e["dur"] >= busy_end:
            busy_end, last = e["ts"] + e["dur"], e
    span = (busy_end - device[0]["ts"]) / 1000.0 if device else 0.0
    per_step = {k: {m: v / steps for m, v in c.items() if m != "ranges"} for k, c in rows.items()}
    return {
        "trace": path,
        "steps": steps,
        "gpu_span_ms_per_step": span / steps,
        "phases_per_step": per_step,
        # micro_step split by its place in the step (the last one communicates): per step
        "micro_steps": [{k: v / steps for k, v in by_micro[i].items()} for i in sorted(by_micro)],
        "nccl_ms_per_step": {k: v / steps for k, v in nccl.most_common()},
        "nccl_calls_per_step": {k: v / steps for k, v in nccl_n.items()},
        # the largest sources of GPU idle time: [phase, kernel before, kernel after, ms per step, gaps per step]
        "top_gaps": [[*k, v / 1000.0 / steps, gap_n[k] / steps] for k, v in gaps.most_common(15)],
        # absolute (base-aligned) microseconds, one per step: the first collective's host launch and GPU start
        "first_collective_host_us": [first_coll[i][1] + base_us if i in first_coll else None
                                     for i in range(len(step_starts))],
        "first_collective_gpu_us": [first_coll[i][0] + base_us if i in first_coll else None
                                    for i in range(len(step_starts))],
    }


ORDER = ["zero_grad", "micro_step", "grad_sync", "optimizer", "after_step", "(outside)"]
METRICS = [("host_ms", "host"), ("gpu_ms", "gpu busy"), ("idle_host_ms", "idle: host"),
           ("idle_other_ms", "idle: other"), ("kernels", "kernels")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("traces", nargs="+", help="NAME=TRACE.json")
    ap.add_argument("--json", help="write the analysis here")
    a = ap.parse_args()
    out = {}
    for arg in a.traces:
        name, _, path = arg.partition("=")
        out[name] = analyze(path)
    for name, s in out.items():
        print(f"\n{name}: {s['steps']} steps, GPU span {s['gpu_span_ms_per_step']:.2f} ms/step")
        print(f"  {'phase (per step)':<14}" + "".join(f"{h:>13}" for _, h in METRICS))
        for ph in ORDER + sorted(set(s["phases_per_step"]) - set(ORDER)):
            if ph not in s["phases_per_step"]:
                continue
            c = s["phases_per_step"][ph]
            print(f"  {ph:<14}" + "".join(f"{c.get(m, 0):>13.2f}" for m, _ in METRICS))
        if len(s["micro_steps"]) > 1:
            print("  micro_step by place, gpu busy / idle: host / idle: other: " +
                  "  ".join(f"{i}: {m.get('gpu_ms', 0):.2f}/{m.get('idle_host_ms', 0):.2f}/{m.get('idle_other_ms', 0):.2f}"
                            for i, m in enumerate(s["micro_steps"])))
        for ph, before, after, ms, n in s["top_gaps"][:8]:
            print(f"  idle {ms:8.3f} ms/step in {n:6.1f} gaps  [{ph}] {before} -> {after}")
        for k, v in s["nccl_ms_per_step"].items():
            print(f"  nccl {v:8.3f} ms/step in {s['nccl_calls_per_step'][k]:.1f} calls  {k}")
    # Ranks of one run: traces named RUN_rankN.
    groups = collections.defaultdict(list)
    for n in out:
        if "_rank" in n and any(x is not None for x in out[n]["first_collective_gpu_us"]):
            groups[n.rsplit("_rank", 1)[0]].append(n)
    for run, names in groups.items():
        if len(names) < 2:
            continue
        n_steps = min(len(out[n]["first_collective_gpu_us"]) for n in names)
        print(f"\n{run}: GPU arrival at each step's first collective, ms after the earliest rank "
              "(its launch by the host in brackets)")
        for i in range(n_steps):
            g = [out[n]["first_collective_gpu_us"][i] for n in names]
            h = [out[n]["first_collective_host_us"][i] for n in names]
            if None in g or None in h:
                continue
            print(f"  step {i}: " + "  ".join(f"{n[len(run) + 1:]} {(x - min(g)) / 1000:6.2f} [{(y - min(h)) / 1000:6.2f}]"
                                             for n, x, y in zip(names, g, h)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
