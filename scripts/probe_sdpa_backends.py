#!/usr/bin/env python3
"""Times scaled_dot_product_attention forward + backward per SDPA backend for GPT-2 small's
attention (b32 x 12 heads x 1024 x 64, bf16, causal, dropout 0 and 0.1), with q/k/v as the views of one [B, T, 3C]
projection efftrain and nanoGPT use, and as contiguous [B, H, T, D] tensors. Usage:
probe_sdpa_backends.py [--json OUT] -> ms per call of forward and of backward, per backend."""
import argparse
import json
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
import torch.nn.functional as F

from probe_gpt2_head import time_ms  # CUDA-event timing, beside this script


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dropout", type=float, nargs="*", default=[0.0, 0.1], help="dropout_p values (training)")
    a = ap.parse_args()
    B, H, T, D = a.batch, 12, 1024, 64
    torch.manual_seed(0)
    qkv = torch.randn(B, T, 3 * H * D, device="cuda", dtype=torch.bfloat16)
    layouts = {
        "qkv_views": lambda t: [x.view(B, T, H, D).transpose(1, 2) for x in t.split(H * D, 2)],
        "contiguous": lambda t: [x.view(B, T, H, D).transpose(1, 2).contiguous() for x in t.split(H * D, 2)],
    }
    flops_fwd = 4 * B * H * T * T * D / 2  # causal: half the scores
    out = {"command": "python3 " + " ".join(sys.argv), "device": torch.cuda.get_device_name(),
           "torch": torch.__version__, "shape": [B, H, T, D], "results": []}
    cases = [(layout, make, p) for p in a.dropout for layout, make in layouts.items()]
    for layout, make, p in cases:
        for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
            base = qkv.detach().clone().requires_grad_(True)
            q, k, v = make(base)
            try:
                with sdpa_kernel([backend]):
                    y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
                    g = torch.randn_like(y)
                    fwd = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True))
                    bwd = time_ms(lambda: torch.autograd.grad(y, (q, k, v), g, retain_graph=True))
            except RuntimeError as e:
                out["results"].append({"layout": layout, "dropout": p, "backend": backend.name,
                                       "error": str(e).splitlines()[0]})
                print(f"{layout:11s} p={p} {backend.name:20s} not available: {str(e).splitlines()[0][:100]}")
                continue
            r = {"layout": layout, "dropout": p, "backend": backend.name, "forward_ms": fwd, "backward_ms": bwd,
                 "forward_tflops": flops_fwd / fwd / 1e9, "backward_tflops": 2.5 * flops_fwd / bwd / 1e9}
            out["results"].append(r)
            print(f"{layout:11s} p={p} {backend.name:20s} fwd {fwd:6.3f} ms ({r['forward_tflops']:5.0f} TFLOP/s)  "
                  f"bwd {bwd:6.3f} ms ({r['backward_tflops']:5.0f} TFLOP/s)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
