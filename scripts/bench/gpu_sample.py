#!/usr/bin/env python3
"""Summarize common.sh's GPU samples: one line per GPU (SM clock mean/min, power, temperature,
utilization, the clock-event reasons seen) and the processes holding a context on each GPU.
Usage: gpu_sample.py SAMPLES.csv [APPS.csv]"""
import collections
import os
import sys


def main(samples, apps=None):
    per = collections.defaultdict(list)
    for line in open(samples):
        f = [x.strip() for x in line.split(",")]
        if len(f) != 6:
            continue
        try:
            per[int(f[0])].append((float(f[1]), float(f[2]), float(f[3]), float(f[4]), int(f[5], 16)))
        except ValueError:
            continue
    procs = collections.defaultdict(set)
    if apps and os.path.exists(apps):
        for line in open(apps):
            f = [x.strip() for x in line.split(",")]
            if len(f) == 3:
                procs[f[1]].add(f[0])
    for gpu, rows in sorted(per.items()):
        busy = [r for r in rows if r[3] > 0] or rows  # the samples while it worked
        mean = lambda i: sum(r[i] for r in busy) / len(busy)
        reasons = 0
        for r in busy:
            reasons |= r[4]
        print(f"    gpu {gpu}: {len(busy)} busy samples, SM {mean(0):.0f} MHz (min {min(r[0] for r in busy):.0f}), "
              f"{mean(1):.0f} W, max {max(r[2] for r in busy):.0f} C, util {mean(3):.0f}%, clock-event reasons 0x{reasons:x}")
    if not per:
        print(f"    no GPU samples in {samples}")
    for bus, pids in sorted(procs.items()):
        print(f"    processes on {bus}: {len(pids)} ({' '.join(sorted(pids))})")


if __name__ == "__main__":
    main(*sys.argv[1:3])
