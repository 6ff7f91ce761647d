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
              replays with no collective in them,
  nccl_init   under torchrun: an NCCL process group whose communicator is created (device_id)
              but runs no kernel, a barrier over the store,
  nccl_lazy   under torchrun: an NCCL process group that never communicates (no communicator
              is created), a barrier over the store,
  gloo        under torchrun: a Gloo process group and one all-reduce on the CPU.
--before (alone only) first does one thing an NCCL job does, then the same replays: peer
(copies to and from the next GPU, which enables peer access), hostfunc (a host function queued on
the stream, as NCCL queues its proxy work), mapped (a kernel writes pinned host memory, as NCCL's
kernels write its proxy FIFO; needs CuPy), stackN (the per-thread stack limit raised to N bytes,
as loading a kernel that needs more stack does).
Every row records the device's stack limit (cudaLimitStackSize) at the start and before the timed
replays. GAPS_RESET_STACK=1 (nccl) puts the start's limit back after the barrier that precedes
the timed replays (NCCL's last kernel before them).
--size tiny (64 Ki halves: dispatch-bound nodes) or medium (4 Mi halves: ~4 us a node on an
H200, about ResNet-50's mean node).
Each process writes {mode, rank, gpu, nodes, replays, replay_ms, us_per_node, launch_us (host time
of one replay call on an idle GPU)} to --out (a "%r"
in it becomes the rank). The timed replays start together: at the wall-clock second GAPS_START
(epoch seconds, concurrent), or after a barrier (nccl).

usage: graph_gaps.py --mode alone|concurrent|nccl|nccl_init|nccl_lazy|gloo --out FILE.json [--size tiny|medium]
                     [--before none|peer|hostfunc|mapped|stackN] [--nodes 1600] [--replays N]
"""
import argparse
import json
import os
import sys
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["alone", "concurrent", "nccl", "nccl_init", "nccl_lazy", "gloo"], required=True)
    ap.add_argument("--size", choices=["tiny", "medium"], default="tiny")
    ap.add_argument("--before", default="none", help="none|peer|hostfunc|mapped|stackN")
    ap.add_argument("--out", required=True)
    ap.add_argument("--nodes", type=int, default=1600)
    ap.add_argument("--replays", type=int, default=0, help="default: 1500 tiny, 300 medium")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("graph_gaps.py: needs a CUDA device")
    rank = int(os.environ.get("RANK", 0))
    gpu = int(os.environ.get("LOCAL_RANK", os.environ.get("GAPS_GPU", 0)))
    torch.cuda.set_device(gpu)
    torch.zeros(1, device="cuda")  # the context exists
    stack_start = stack_limit()
    replays = a.replays or (1500 if a.size == "tiny" else 300)
    grouped = a.mode in ("nccl", "nccl_init", "nccl_lazy", "gloo")
    if grouped:
        import torch.distributed as dist
        if a.mode == "nccl":
            dist.init_process_group("nccl", device_id=torch.device("cuda", gpu))
            t = torch.ones(1, device="cuda")
            dist.all_reduce(t)
            torch.cuda.synchronize()
        elif a.mode == "nccl_init":
            dist.init_process_group("nccl", device_id=torch.device("cuda", gpu))
        elif a.mode == "nccl_lazy":
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
            dist.all_reduce(torch.ones(1))
    before_error = do_before(a.before, gpu) if a.before != "none" else None
    # tiny: the nodes' own work is short, so a replay's time is mostly dispatch.
    x = torch.randn((64 if a.size == "tiny" else 4096) * 1024, device="cuda", dtype=torch.half)
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
        torch.distributed.barrier()  # an NCCL kernel
        torch.cuda.synchronize()
        if os.environ.get("GAPS_RESET_STACK") == "1":
            set_stack_limit(stack_start)
    elif a.mode == "gloo":
        torch.distributed.barrier()
    elif a.mode in ("nccl_init", "nccl_lazy"):
        store_barrier()
    elif os.environ.get("GAPS_START"):
        time.sleep(max(0.0, float(os.environ["GAPS_START"]) - time.time()))
    stack_timed = stack_limit()
    launch_s = []
    for _ in range(10):  # host time of one replay call, the GPU idle
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        g.replay()
        launch_s.append(time.perf_counter() - t0)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        g.replay()
    end.record()
    end.synchronize()
    ms = start.elapsed_time(end) / replays
    row = {"mode": a.mode, "size": a.size, "before": a.before, "before_error": before_error,
           "stack_limit_start": stack_start, "stack_limit_timed": stack_timed,
           "rank": rank, "gpu": gpu, "launch_us": 1e6 * sorted(launch_s)[len(launch_s) // 2],
           "device_name": torch.cuda.get_device_name(gpu), "nodes": a.nodes, "replays": replays,
           "replay_ms": ms, "us_per_node": 1000.0 * ms / a.nodes,
           "nccl_env": {k: v for k, v in os.environ.items() if k.startswith(("NCCL_", "TORCH_NCCL_"))}}
    with open(a.out.replace("%r", str(rank)), "w") as f:
        json.dump(row, f)
    print(json.dumps(row))
    if grouped:
        torch.distributed.destroy_process_group()


def cudart():
    import ctypes
    for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            pass
    raise RuntimeError("no libcudart found")


def stack_limit():
    import ctypes
    v = ctypes.c_size_t(0)
    rc = cudart().cudaDeviceGetLimit(ctypes.byref(v), 0)  # cudaLimitStackSize
    return v.value if rc == 0 else -rc


def set_stack_limit(n):
    import ctypes
    rc = cudart().cudaDeviceSetLimit(0, ctypes.c_size_t(n))
    if rc != 0:
        raise RuntimeError(f"cudaDeviceSetLimit(cudaLimitStackSize, {n}) returned {rc}")


def do_before(what, gpu):
    """One thing an NCCL job does to the process, done without NCCL; an error message or None."""
    try:
        if what.startswith("stack"):
            set_stack_limit(int(what[len("stack"):]))
        elif what == "peer":
            other = (gpu + 1) % torch.cuda.device_count()
            mine = torch.ones(1 << 20, device="cuda")
            theirs = torch.zeros(1 << 20, device=f"cuda:{other}")
            theirs.copy_(mine)
            mine.copy_(theirs)
            torch.cuda.synchronize(other)
        elif what == "hostfunc":
            import ctypes
            rt = cudart()
            # free(NULL) as the host function: a no-op that needs no Python (no GIL in the
            # driver's callback thread while this thread waits in synchronize).
            free = ctypes.cast(ctypes.CDLL(None).free, ctypes.c_void_p)
            stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
            rc = rt.cudaLaunchHostFunc(stream, free, None)
            torch.cuda.synchronize()
            if rc != 0:
                return f"cudaLaunchHostFunc returned {rc}"
        elif what == "mapped":
            import cupy
            host = torch.zeros(1 << 16, pin_memory=True)
            mem = cupy.cuda.UnownedMemory(host.data_ptr(), host.numel() * 4, host)
            arr = cupy.ndarray((host.numel(),), cupy.float32, cupy.cuda.MemoryPointer(mem, 0))
            with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
                arr.fill(1.0)  # a kernel writing host memory through its mapping
            torch.cuda.synchronize()
            if float(host.sum()) != host.numel():
                return "the kernel's writes did not reach host memory"
        else:
            return f"unknown --before {what}"
    except Exception as e:  # noqa: BLE001 -- the diagnostic reports what failed and goes on
        return f"{type(e).__name__}: {e}"
    return None


def store_barrier():
    """A barrier through the process group's store (an NCCL group that must not communicate)."""
    store = torch.distributed.distributed_c10d._get_default_store()
    store.add("graph_gaps_arrived", 1)
    world = torch.distributed.get_world_size()
    while int(store.add("graph_gaps_arrived", 0)) < world:
        time.sleep(0.001)


if __name__ == "__main__":
    main()
