#!/usr/bin/env python3
"""Tabulates the GPU kernels of Chrome traces written by efftrain (train.profile_start_step) or
by torch.profiler (scripts/pytorch_reference.py --profile): time per profiled step by kernel
class and the top kernels by name, side by side for several traces.

usage: profile_summary.py [--steps N ...] [--top K] [--json OUT] NAME=TRACE.json [NAME=TRACE.json ...]
"""
import argparse
import collections
import json
import re

CLASSES = [  # first match wins; patterns over the kernel name, lower-cased
    ("nccl", r"nccl"),  # first: NCCL's names hold "reduce" (ReduceScatter, AllReduce)
    ("residual_norm", r"residual_norm|column_sums_kernel"),  # efftrain's fused residual + dropout + LayerNorm
    # before convolution: cuDNN's SDPA names hold "fprop"
    ("attention", r"flash|fmha|attention|native_sdpa|sdpa|dot_do_o|convert_dq"),
    ("convolution", r"conv(?!ert)|fprop|dgrad|wgrad|implicit_gemm"),  # cuDNN's, before matmul ("gemm", "xmma")
    ("batch_norm", r"bn_fw|bn_bw|batch_norm|batchnorm|bn_stats|bn_apply|bn_backward"),  # cuDNN's, ATen's, efftrain's
    ("matmul", r"gemm|cutlass|sm90_xmma|nvjet|cublas|wgmma|xmma_gemm"),
    ("cross_entropy", r"log_softmax|softmax|nll_loss|cross_entropy|ce_forward|ce_backward|ce_fused"),
    ("layer_norm", r"layer_norm|layernorm"),
    ("optimizer", r"adam|multi_tensor_apply|foreach"),
    ("dropout", r"dropout|fused_dropout|philox"),
    ("gelu", r"gelu"),  # efftrain's GELU backward with its column sums: block_sums_kernel<T, GeluBackward<T>>
    ("embedding", r"embedding|index_select|indexing_backward|index_put"),
    ("reduce", r"reduce_kernel|reduce|block_sums_kernel|partial_sums_kernel"),  # bias gradients
    ("copy_cast", r"copy|cast|memcpy|memset|fill"),
    ("elementwise", r"elementwise|vectorized|unrolled"),
]


def classify(name):
    n = name.lower()
    for cls, pat in CLASSES:
        if re.search(pat, n):
            return cls
    return "other"


DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


def read_trace(path):
    """A Chrome trace's events and its clock base in microseconds (0 where it has none)."""
    with open(path) as f:
        t = json.load(f)
    if not isinstance(t, dict):
        return t, 0.0
    return t["traceEvents"], t.get("baseTimeNanoseconds", 0) / 1000.0


def load(path):
    events, _ = read_trace(path)
    return [e for e in events if e.get("ph") == "X" and e.get("cat") in DEVICE_CATS]


def by_op(events, steps, depth=3, top=40):
    """GPU time per (kernel, innermost `depth` CPU ops that launched it and the outermost): each kernel's launch
    (the runtime event of its correlation id) placed in the cpu_op events around it on its thread.
    Kernels replayed from a CUDA graph have one launch (cudaGraphLaunch) and say little here: run
    the profile eagerly for this."""
    ops, runtime = collections.defaultdict(list), {}
    for e in events:
        if e.get("ph") != "X":
            continue
        if e.get("cat") == "cpu_op":
            ops[(e.get("pid"), e.get("tid"))].append(e)
        elif e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {}):
            runtime[e["args"]["correlation"]] = e
    launches = collections.defaultdict(list)
    for e in runtime.values():
        launches[(e.get("pid"), e.get("tid"))].append(e)
    chain = {}  # correlation -> "innermost < ... < outer"
    for tid, rts in launches.items():
        seq = sorted(ops.get(tid, []), key=lambda o: (o["ts"], -o["dur"]))
        stack, i = [], 0
        for r in sorted(rts, key=lambda r: r["ts"]):
            while i < len(seq) and seq[i]["ts"] <= r["ts"]:
                while stack and stack[-1]["ts"] + stack[-1]["dur"] <= seq[i]["ts"]:
                    stack.pop()
                stack.append(seq[i])
                i += 1
            while stack and stack[-1]["ts"] + stack[-1]["dur"] < r["ts"]:
                stack.pop()
            names = [o["name"] for o in reversed(stack[-depth:])]
            if len(stack) > depth:  # and the outermost, which says whose work it is
                names += ["..." if len(stack) > depth + 1 else None, stack[0]["name"]]
            chain[r["args"]["correlation"]] = " < ".join(n for n in names if n) or "-"
    acc = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in DEVICE_CATS:
            c = e.get("args", {}).get("correlation")
            acc[(e["name"][:80], chain.get(c, "-"))] += e["dur"]
    return [[k, c, v / 1000.0 / steps] for (k, c), v in acc.most_common(top)]


def summarize(path, steps, top, ops=False):
    if ops:
        events, _ = read_trace(path)
        out = summarize_events([e for e in events if e.get("ph") == "X" and e.get("cat") in DEVICE_CATS], path, steps,
                               top)
        out["by_op_ms_per_step"] = by_op(events, steps)
        return out
    return summarize_events(load(path), path, steps, top)


def summarize_events(ev, path, steps, top):
    if not ev:
        return {"trace": path, "kernels": 0}
    busy = sum(e["dur"] for e in ev)
    span = max(e["ts"] + e["dur"] for e in ev) - min(e["ts"] for e in ev)
    by_class, by_name = collections.Counter(), collections.Counter()
    for e in ev:
        by_class[classify(e["name"])] += e["dur"]
        by_name[e["name"][:160]] += e["dur"]
    ms = lambda us: us / 1000.0 / steps
    return {"trace": path, "steps": steps, "kernels": len(ev), "gpu_busy_ms_per_step": ms(busy),
            "gpu_span_ms_per_step": ms(span), "idle_fraction": 1 - busy / span if span else 0,
            "by_class_ms_per_step": {k: ms(v) for k, v in by_class.most_common()},
            "top_kernels_ms_per_step": [[k, ms(v)] for k, v in by_name.most_common(top)]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("traces", nargs="+", help="NAME=TRACE.json")
    ap.add_argument("--steps", type=int, nargs="*", default=[3], help="profiled steps per trace (one, or one each)")
    ap.add_argument("--top", type=int, default=12, help="kernels printed per trace (the JSON keeps 60)")
    ap.add_argument("--json", help="write the summaries here")
    ap.add_argument("--ops", action="store_true", help="also GPU time by the CPU ops that launched each kernel")
    a = ap.parse_args()
    out = {}
    for i, arg in enumerate(a.traces):
        name, _, path = arg.partition("=")
        steps = a.steps[i] if i < len(a.steps) else a.steps[-1]
        out[name] = summarize(path, steps, 60, a.ops)
    names = list(out)
    classes = sorted({c for s in out.values() for c in s.get("by_class_ms_per_step", {})},
                     key=lambda c: -max(s.get("by_class_ms_per_step", {}).get(c, 0) for s in out.values()))
    print(f"{'ms per step':<16}" + "".join(f"{n[:18]:>20}" for n in names))
    for row, get in [("gpu span", lambda s: s.get("gpu_span_ms_per_step", 0)),
                     ("gpu busy", lambda s: s.get("gpu_busy_ms_per_step", 0))] + \
                    [(c, (lambda c: lambda s: s.get("by_class_ms_per_step", {}).get(c, 0))(c)) for c in classes]:
        print(f"{row:<16}" + "".join(f"{get(out[n]):>20.2f}" for n in names))
    for n in names:
        print(f"\n{n}: top kernels (ms per step)")
        for k, v in out[n].get("top_kernels_ms_per_step", [])[:a.top]:
            print(f"  {v:8.2f}  {k}")
        if out[n].get("by_op_ms_per_step"):
            print(f"\n{n}: kernels by the CPU ops that launched them (ms per step)")
            for k, c, v in out[n]["by_op_ms_per_step"][:2 * a.top]:
                print(f"  {v:8.2f}  {k[:60]}  <-  {c[:150]}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
