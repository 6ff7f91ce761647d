#!/usr/bin/env python3
"""Does being in an NCCL job slow the replay of a CUDA graph that communicates nothing?

The seventh session's traces put most of ResNet-50's multi-GPU loss in longer gaps between the
nodes of its replayed micro-step graph (1.03 -> 1.52 ms per micro-step of ~1,600 nodes), also in
micro-steps without a collective. This reproduces that without efftrain: one process per GPU
captures a graph of NODES small nodes (elementwise kernels and device-to-device copies,
alternating) and times REPLAYS replays of it, either
  alone       this process only (GPU 0),
  concurrent  one process per GPU at once, no process group (start them yourself, GAPS_GPU=i),
  nccl        under torchrun: an NCCL process group and one all-reduce first, then the same
              replays with no collective in them.
Each process writes {mode, rank, gpu, nodes, replays, replay_ms, us_per_node} to --out (a "%r"
in it becomes the rank). The timed replays start together: at the wall-clock second GAPS_START
(epoch seconds, concurrent), or after a barrier (nccl).

usage: graph_gaps.py --mode alone|concurrent|nccl --out FILE.json [--nodes 1600] [--replays 1500]
"""
import argparse
import json
import os
import sys
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["alone", "concurrent", "nccl"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--nodes", type=int, default=1600)
    ap.add_argument("--replays", type=int, default=1500)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("graph_gaps.py: needs a CUDA device")
    rank = int(os.environ.get("RANK", 0))
    gpu = int(os.environ.get("LOCAL_RANK", os.environ.get("GAPS_GPU", 0)))
    torch.cuda.set_device(gpu)
    if a.mode == "nccl":
        import torch.distributed as dist
        dist.init_process_group("nccl", device_id=torch.device("cuda", gpu))
        t = torch.ones(1, device="cuda")
        dist.all_reduce(t)
        torch.cuda.synchronize()
    # Small tensors: the nodes' own work is short, so a replay's time is mostly dispatch.
    x = torch.randn(64 * 1024, device="cuda", dtype=torch.half)
    y = torch.zeros_like(x)

    def body():
        for i in range(a.nodes // 2):
            y.add_(x, alpha=1e-3)  # an elementwise kernel
            x.copy_(y)             # a device-to-device copy
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            body()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        body()
    for _ in range(20):
        g.replay()
    torch.cuda.synchronize()
    if a.mode == "nccl":
        torch.distributed.barrier()
        torch.cuda.synchronize()
    elif os.environ.get("GAPS_START"):
        time.sleep(max(0.0, float(os.environ["GAPS_START"]) - time.time()))
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(a.replays):
        g.replay()
    end.record()
    end.synchronize()
    ms = start.elapsed_time(end) / a.replays
    row = {"mode": a.mode, "rank": rank, "gpu": gpu, "device_name": torch.cuda.get_device_name(gpu),
           "nodes": a.nodes, "replays": a.replays, "replay_ms": ms, "us_per_node": 1000.0 * ms / a.nodes}
    with open(a.out.replace("%r", str(rank)), "w") as f:
        json.dump(row, f)
    print(json.dumps(row))
    if a.mode == "nccl":
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
