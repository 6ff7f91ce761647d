#!/usr/bin/env python3
"""efftrain and PyTorch reference reports side by side in one benchmark JSON: the key figures
of each run and the first run's throughput over each (efftrain_over_this).

usage: side_by_side.py OUT.json TITLE COMMAND REPORT.json [REPORT.json ...]
"""
import json, os, sys
out, title, command, *paths = sys.argv[1:]
runs = []
for p in paths:
    j = json.load(open(p))
    runs.append({"name": os.path.basename(os.path.dirname(p)), "runner": j["environment"].get("runner", "efftrain"),
                 "device_name": j["environment"]["device_name"], "status": j["status"],
                 "samples_per_s": j["throughput"]["samples_per_s"], "tokens_per_s": j["throughput"]["tokens_per_s"],
                 "peak_allocated_bytes": j["memory"]["peak_allocated_bytes"], "mfu": j.get("mfu"),
                 "config": j["experiment"].get("config") if j["environment"].get("runner") else j["experiment"].get("overrides")})
base = runs[0]["samples_per_s"] if runs else 0
for r in runs:
    r["efftrain_over_this"] = base / r["samples_per_s"] if r["samples_per_s"] else None
json.dump({"title": title, "command": command,
           "card": runs[0]["device_name"] if runs else None, "runs": runs}, open(out, "w"), indent=1)
for r in runs:
    print(f"  {r['name']:<22} {r['device_name']:<24} {r['samples_per_s']:>9.1f} samples/s {r['tokens_per_s']:>9.0f} tok/s "
          f"peak {(r['peak_allocated_bytes'] or 0) / 2**30:6.2f} GiB  efftrain/this x{r['efftrain_over_this'] or 0:.2f}")
