#!/usr/bin/env python3
"""PNG plots from efftrain reports.

usage: scripts/plot.py -o OUT_DIR REPORT.json [REPORT.json ...]
Writes, into OUT_DIR:
  curves.png   the quality metric against training time, one line per run (baseline vs optimized)
  bars.png     throughput and peak memory per run, as ratios to the first (ablations)
  scaling.png  throughput against the number of processes, with ideal linear scaling from the
               smallest (only when the reports span more than one world size)
Runs are labelled by experiment name and overrides. Needs matplotlib (scripts/setup.sh installs
it where it can); when this python3 lacks it, the one named in ~/.cache/efftrain/plot-python runs.
"""
import json
import os
import sys


def python_with_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return None
    except ImportError:
        cache = os.environ.get("EFFTRAIN_CACHE", os.path.expanduser("~/.cache/efftrain"))
        try:
            py = open(os.path.join(cache, "plot-python")).read().strip()
        except OSError:
            py = ""
        if py and not os.environ.get("EFFTRAIN_PLOT_REEXEC"):
            os.environ["EFFTRAIN_PLOT_REEXEC"] = "1"  # once: no loop if that python lacks it too
            return py
        sys.exit("plot.py: matplotlib is not installed (scripts/setup.sh installs it where it can)")


def labels(reports):
    """Experiment name and the overrides that are not shared by every run, wrapped."""
    import textwrap
    overrides = [[o for o in r["experiment"].get("overrides", []) if not o.startswith("train.seed=")] for r in reports]
    common = set(overrides[0]).intersection(*map(set, overrides[1:])) if overrides else set()
    out = []
    for r, o in zip(reports, overrides):
        text = " ".join([r["experiment"].get("name", "?")] + [x for x in o if x not in common])
        out.append(textwrap.fill(text, 36))
    return out


def main():
    args = sys.argv[1:]
    if len(args) < 3 or args[0] != "-o":
        sys.exit(__doc__.strip().splitlines()[2])
    out, paths = args[1], args[2:]
    reports = []
    for p in paths:
        try:
            with open(p) as f:
                reports.append(json.load(f))
        except (OSError, ValueError) as e:
            sys.exit(f"plot.py: {p}: {e}")
    other = python_with_matplotlib()
    if other:
        os.execv(other, [other, __file__] + sys.argv[1:])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    names = labels(reports)
    card = reports[0]["environment"].get("device_name", "?")

    # Quality against time.
    fig, ax = plt.subplots(figsize=(11, 5))
    for r, n in zip(reports, names):
        curve = r["quality"].get("curve") or []
        if curve:
            ax.plot([c["time_s"] for c in curve], [c["value"] for c in curve], marker="o", label=n)
    target = reports[0]["quality"].get("target")
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", label=f"target {target:g}")
    metric = reports[0]["quality"]["metric"]
    ax.set_xlabel("training time (s, evaluation included)")
    ax.set_ylabel(metric)
    if metric == "perplexity":
        ax.set_yscale("log")
    ax.set_title(f"{metric} against time ({card})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.08, right=0.66)
    fig.savefig(os.path.join(out, "curves.png"), dpi=120)
    plt.close(fig)

    # Throughput and memory, as ratios to the first run.
    sps = [r["throughput"]["samples_per_s"] for r in reports]
    mem = [r["memory"]["peak_allocated_bytes"] / 2**30 for r in reports]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.7 * len(reports) + 2.5))
    for ax, values, title, unit in ((axes[0], sps, "throughput", "samples/s"), (axes[1], mem, "peak memory", "GiB")):
        ys = range(len(values))
        ax.barh(ys, values, color=["tab:grey"] + ["tab:blue"] * (len(values) - 1))
        ax.set_yticks(list(ys))
        ax.set_yticklabels(names if ax is axes[0] else [""] * len(names), fontsize=8)
        ax.invert_yaxis()
        for y, v in zip(ys, values):
            ratio = v / values[0] if values[0] else 0
            ax.text(v, y, f" {v:.3g} ({ratio:.2f}x)", va="center", fontsize=8)
        ax.set_xlabel(unit)
        ax.set_title(f"{title} ({card})")
        ax.set_xlim(0, max(values) * 1.35 if max(values) > 0 else 1)
    fig.subplots_adjust(left=0.24, right=0.98, wspace=0.08)
    fig.savefig(os.path.join(out, "bars.png"), dpi=120)
    plt.close(fig)

    # Scaling.
    worlds = sorted({r["environment"].get("world_size", 1) for r in reports})
    if len(worlds) > 1:
        fig, ax = plt.subplots(figsize=(6, 5))
        by_name = {}
        for r in reports:
            key = r["experiment"]["config"]["distributed"].get("grad_sync", "?")
            key = f'{r["experiment"]["name"]} ({key})'
            by_name.setdefault(key, []).append((r["environment"].get("world_size", 1), r["throughput"]["samples_per_s"]))
        base = min((w, s) for r in reports for w, s in [(r["environment"].get("world_size", 1), r["throughput"]["samples_per_s"])])
        for key, pts in by_name.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key)
        ax.plot(worlds, [base[1] * w / base[0] for w in worlds], color="grey", linestyle="--", label="linear")
        ax.set_xlabel("processes (GPUs)")
        ax.set_ylabel("samples/s")
        ax.set_xticks(worlds)
        ax.set_title(f"scaling ({card})")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "scaling.png"), dpi=120)
        plt.close(fig)
    print("\n".join(os.path.join(out, f) for f in sorted(os.listdir(out)) if f.endswith(".png")))


if __name__ == "__main__":
    main()
