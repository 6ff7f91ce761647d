#!/usr/bin/env python3
"""Scaling plot from benchmark JSONs written by scripts/collect.py (scripts/bench/scaling_*.sh):
throughput per world size, and the ideal line from each series' 1-GPU point.

usage: plot_scaling.py OUT.png LABEL=FILE.json [LABEL=FILE.json ...]
Runs named *_bind are left out (they repeat a world size with CPU binding).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, series = sys.argv[1], sys.argv[2:]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for spec in series:
        label, path = spec.split("=", 1)
        doc = json.load(open(path))
        runs = sorted((r for r in doc["runs"] if not r["name"].endswith("_bind")), key=lambda r: r["world_size"])
        ws = [r["world_size"] for r in runs]
        sps = [r["samples_per_s"] for r in runs]
        base = sps[0]
        ax = axes[0] if "ResNet" in label else axes[1]
        line, = ax.plot(ws, sps, "o-", label=label)
        ax.plot(ws, [base * w for w in ws], "--", color=line.get_color(), alpha=0.5)
        for w, s in zip(ws[1:], sps[1:]):
            ax.annotate(f"{s / (w * base):.1%}", (w, s), textcoords="offset points", xytext=(4, -12), fontsize=8)
        card = doc.get("card")
    for ax, title, unit in ((axes[0], "ResNet-50 / CIFAR-10, b128 per GPU", "images/s"),
                            (axes[1], "GPT-2 small / WikiText-2, b32x1024 per GPU", "sequences/s")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("GPUs")
        ax.set_ylabel(unit)
        ax.set_xticks([1, 2, 4])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Scaling on {card} (dashed: linear from 1 GPU; labels: efficiency)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
