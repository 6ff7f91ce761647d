#!/usr/bin/env python3
"""Where GPT-2 small's step time goes on this card (issue 12), measured with CUDA events.

1. The classifier (tied embedding, [B*T, 768] x [768, V]) forward + backward and the cross-entropy,
   bf16 autocast, at the true vocabulary (50257) and padded to 50304 (a multiple of 64/128).
2. A torch.profiler table of one eager training step of scripts/pytorch_reference.py's GPT-2
   (same model as efftrain's), by CUDA time: what dominates the eager step.

usage: probe_gpt2_head.py [--batch 32] [--seq 1024] [--out FILE.json]
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F


def time_ms(fn, iters=20, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def head(batch, seq, vocab, true_vocab):
    x = torch.randn(batch * seq, 768, device="cuda", requires_grad=True)
    w = (torch.randn(vocab, 768, device="cuda") * 0.02).requires_grad_()
    y = torch.randint(0, true_vocab, (batch * seq,), device="cuda")

    def matmul_only():
        with torch.autocast("cuda", torch.bfloat16):
            logits = F.linear(x, w)
        logits.backward(torch.ones_like(logits))

    def with_ce():
        with torch.autocast("cuda", torch.bfloat16):
            logits = F.linear(x, w)
            if vocab != true_vocab:
                logits = logits[:, :true_vocab]
            loss = F.cross_entropy(logits, y)
        loss.backward()

    return {"vocab": vocab, "matmul_fwd_bwd_ms": time_ms(matmul_only), "with_cross_entropy_ms": time_ms(with_ce)}


def profile_step(batch, seq):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import pytorch_reference as ref  # noqa: E402

    model = ref.GPT2().cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    idx = torch.randint(0, 50257, (batch, seq), device="cuda")

    def step():
        with torch.autocast("cuda", torch.bfloat16):
            loss = model(idx, idx)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    result = {"card": torch.cuda.get_device_name(), "batch": a.batch, "seq": a.seq,
              "head": [head(a.batch, a.seq, v, 50257) for v in (50257, 50304)]}
    for h in result["head"]:
        print(f"vocab {h['vocab']}: classifier fwd+bwd {h['matmul_fwd_bwd_ms']:.2f} ms, "
              f"with cross-entropy {h['with_cross_entropy_ms']:.2f} ms")
    table = profile_step(a.batch, a.seq)
    print(table)
    result["eager_step_profile"] = table
    if a.out:
        json.dump(result, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
