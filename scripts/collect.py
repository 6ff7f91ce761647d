#!/usr/bin/env python3
"""Collect efftrain reports into one benchmark JSON (the figures that matter, card named).

usage: collect.py OUT.json TITLE COMMAND REPORT.json [REPORT.json ...]
Each run keeps its name (the report folder), the overrides it ran with and the key figures;
ratios are against the first report unless a run names its own baseline in the title.
"""
import json
import os
import sys


def figures(path):
    j = json.load(open(path))
    r = {
        "name": os.path.basename(os.path.dirname(path)),
        "status": j["status"],
        "overrides": j["experiment"]["overrides"],
        "device_name": j["environment"]["device_name"],
        "model": j["model"]["name"],
        "parameters": j["model"]["parameters"],
        "batch_size": j["experiment"]["config"]["train"]["batch_size"],
        "precision": j["experiment"]["config"]["precision"]["mode"],
        "steps": j["result"]["steps"],
        "steady_steps": j["throughput"]["steady_steps"],
        "window_restarts": j["throughput"].get("window_restarts", 0),
        "samples_per_s": j["throughput"]["samples_per_s"],
        "tokens_per_s": j["throughput"]["tokens_per_s"],
        "peak_allocated_bytes": j["memory"]["peak_allocated_bytes"],
        "peak_reserved_bytes": j["memory"]["peak_reserved_bytes"],
        "mfu": j["mfu"],
        "quality_final": j["quality"]["final"],
        "optimizations": j["optimizations"],
        "model_detail": {k: v for k, v in j["model"].items() if k not in ("name", "parameters")},
        "quality_metric": j["quality"]["metric"],
        "eval_examples": (j["quality"]["curve"] or [{}])[-1].get("step"),
        "result": j["result"],
        "world_size": j["environment"].get("world_size", 1),
        "ranks": j.get("ranks", []),
    }
    return r


def main():
    out, title, command, *reports = sys.argv[1:]
    runs = [figures(p) for p in reports if os.path.exists(p)]
    missing = [p for p in reports if not os.path.exists(p)]
    base = runs[0] if runs else None
    for r in runs:
        if base and base["samples_per_s"]:
            r["throughput_ratio_to_first"] = r["samples_per_s"] / base["samples_per_s"]
        if base and base["samples_per_s"] and r["world_size"] > 1 and base["world_size"] == 1:
            # Scaling efficiency: N-GPU throughput / (N x 1-GPU throughput), same per-GPU batch.
            r["scaling_efficiency_vs_first"] = r["samples_per_s"] / (r["world_size"] * base["samples_per_s"])
        if base and base["peak_allocated_bytes"]:
            r["memory_ratio_to_first"] = r["peak_allocated_bytes"] / base["peak_allocated_bytes"]
    doc = {
        "title": title,
        "card": runs[0]["device_name"] if runs else None,
        "command": command,
        "runs": runs,
        "missing_reports": missing,
    }
    with open(out + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(out + ".tmp", out)
    w = max([len(r["name"]) for r in runs] + [4])
    print(f"{title} on {doc['card']}")
    for r in runs:
        print(f"  {r['name']:<{w}}  {r['status']:<14} {r['samples_per_s']:>10.1f} samples/s  "
              f"{r['tokens_per_s']:>10.0f} tok/s  peak {r['peak_allocated_bytes'] / 2**30:6.2f} GiB  "
              f"x{r.get('throughput_ratio_to_first', 0):.3f}"
              + (f"  scaling {r['scaling_efficiency_vs_first']:.1%}" if "scaling_efficiency_vs_first" in r else ""))
    for m in missing:
        print(f"  MISSING {m}")


if __name__ == "__main__":
    main()
