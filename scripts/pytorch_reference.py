#!/usr/bin/env python3
"""The same recipes in plain PyTorch, for comparing efftrain against what a skilled PyTorch
user gets on the same card (issue 12). Writes a report.json that `efftrain compare` reads
(schema efftrain.report/1, the throughput, memory and environment fields filled in).

Models are written out to match efftrain's: GPT-2 small (tied embeddings, pre-LN, tanh GELU,
SDPA causal attention, dropout 0.1) and the CIFAR ResNet-50 (3x3 stride-1 stem, no max-pool,
bottlenecks [3, 4, 6, 3] with the stride on the 3x3 conv, 10 classes). The training step is
the recipe's: AdamW (fused on CUDA; lr 1e-4, betas 0.9/0.999, wd 0.01), autocast to the chosen
dtype (fp16 with torch.amp.GradScaler), zero_grad(set_to_none=True), optionally torch.compile.
Inputs are random batches already on the device (efftrain's device-resident input path also
keeps the data there), so both sides measure the model step.

usage: pytorch_reference.py --task gpt2|resnet50 [--batch B] [--precision fp32|fp16|bf16]
         [--compile] [--channels-last] [--steps N] [--warmup W] [--seq-len T] [--vocab-multiple M]
         [--out report.json] [--profile trace.json] [--memory-snapshot snapshot.pickle]
"""
import argparse
import json
import math
import os
import platform
import socket
import sys
import time
from datetime import datetime, timezone

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        x = x + self.drop(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))
        return x + self.drop(self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")))


class GPT2(nn.Module):
    def __init__(self, vocab=50257, context=1024, d=768, layers=12, heads=12, dropout=0.1, vocab_multiple=1):
        super().__init__()
        padded = (vocab + vocab_multiple - 1) // vocab_multiple * vocab_multiple
        self.wte, self.wpe = nn.Embedding(padded, d), nn.Embedding(context, d)
        # Padding as efftrain's task.model.vocab_multiple: zero rows, logit -inf in the softmax.
        mask = torch.zeros(padded)
        mask[vocab:] = float("-inf")
        self.register_buffer("pad_mask", mask if padded > vocab else None, persistent=False)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(Block(d, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        with torch.no_grad():
            self.wte.weight[vocab:].zero_()

    def forward(self, idx, targets):
        pos = torch.arange(idx.size(1), device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight, self.pad_mask)
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4)
        self.down = None
        if stride != 1 or cin != planes * 4:
            self.down = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.down is None else self.down(x)))


class ResNet50(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64)
        blocks, cin = [], 64
        for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
            for b in range(n):
                blocks.append(Bottleneck(cin, planes, 2 if stage > 0 and b == 0 else 1))
                cin = planes * 4
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x, targets):
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return F.cross_entropy(self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)), targets)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=["gpt2", "resnet50"], required=True)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="bf16")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--channels-last", action="store_true", help="ResNet-50: channels_last tensors")
    ap.add_argument("--steps", type=int, default=30, help="timed steps")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation, autotuning)")
    ap.add_argument("--seq-len", type=int, default=1024, help="GPT-2 sequence length")
    ap.add_argument("--vocab-multiple", type=int, default=1,
                    help="GPT-2: pad the embedding/classifier rows to a multiple of this (masked, as efftrain)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--name", help="report name (default: pytorch-<task>-<precision>[-compile])")
    ap.add_argument("--out", default="report.json")
    ap.add_argument("--profile", help="after the timed steps, profile 3 more with torch.profiler into this Chrome trace")
    ap.add_argument("--memory-snapshot", help="after the timed steps, record the CUDA allocator's history over 2 more "
                    "and dump it here (scripts/memory_summary.py reads it)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = a.precision != "fp32"
    batch = a.batch or (32 if a.task == "gpt2" else 128)
    if a.task == "gpt2":
        model = GPT2(context=max(1024, a.seq_len), vocab_multiple=a.vocab_multiple).to(dev)
        inputs = [torch.randint(0, 50257, (batch, a.seq_len + 1), device=dev) for _ in range(4)]
        batches = [(x[:, :-1].contiguous(), x[:, 1:].contiguous()) for x in inputs]
        tokens_per_sample = a.seq_len
    else:
        model = ResNet50().to(dev)
        fmt = torch.channels_last if a.channels_last else torch.contiguous_format
        if a.channels_last:
            model = model.to(memory_format=torch.channels_last)
        batches = [(torch.randn(batch, 3, 32, 32, device=dev).contiguous(memory_format=fmt),
                    torch.randint(0, 10, (batch,), device=dev)) for _ in range(4)]
        tokens_per_sample = 0
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.999), fused=dev.type == "cuda")
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[a.precision]
    scaler = torch.amp.GradScaler(dev.type, enabled=a.precision == "fp16")
    step_model = torch.compile(model) if a.compile else model
    model.train()

    def step(i):
        x, y = batches[i % len(batches)]
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = step_model(x, y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    t_setup = time.perf_counter()
    for i in range(a.warmup):
        step(i)
    sync()
    warm_s = time.perf_counter() - t_setup
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for i in range(a.steps):
        loss = step(i)
    sync()
    elapsed = time.perf_counter() - t0
    sps = batch * a.steps / elapsed
    if a.profile:
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for i in range(3):
                step(i)
            sync()
        prof.export_chrome_trace(a.profile)
    if a.memory_snapshot and dev.type != "cuda":
        print("--memory-snapshot: the CUDA allocator's history; none on " + str(dev), file=sys.stderr)
    elif a.memory_snapshot:
        torch.cuda.memory._record_memory_history(max_entries=1_000_000, stacks="python")
        for i in range(2):
            step(i)
        sync()
        torch.cuda.memory._dump_snapshot(a.memory_snapshot)
        torch.cuda.memory._record_memory_history(enabled=None)
    name = a.name or f"pytorch-{a.task}-{a.precision}{'-compile' if a.compile else ''}"
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    reserved = torch.cuda.max_memory_reserved(dev) if dev.type == "cuda" else None
    report = {
        "schema": "efftrain.report/1",
        "status": "completed" if math.isfinite(loss.item()) else "diverged",
        "message": None,
        "experiment": {"name": name, "description": "PyTorch reference (scripts/pytorch_reference.py)",
                       "file": None, "overrides": [],
                       "config": {"runner": "pytorch", "task": a.task, "batch_size": batch, "precision": a.precision,
                                  "compile": a.compile, "channels_last": a.channels_last, "seq_len": a.seq_len,
                                  "vocab_multiple": a.vocab_multiple,
                                  "steps": a.steps, "warmup": a.warmup}},
        "environment": {"runner": "pytorch", "torch_version": torch.__version__, "python": platform.python_version(),
                        "cuda_version": torch.version.cuda, "device": str(dev),
                        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
                        "world_size": 1, "hostname": socket.gethostname(),
                        "finished_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
        "model": {"name": a.task, "parameters": params},
        "result": {"steps": a.warmup + a.steps, "samples": batch * (a.warmup + a.steps), "train_s": elapsed,
                   "warmup_s": warm_s, "time_to_target_s": None},
        "throughput": {"samples_per_s": sps, "tokens_per_s": sps * tokens_per_sample, "steady_steps": a.steps,
                       "steady_s": elapsed, "warmup_steps_excluded": a.warmup,
                       "timing": "host clock, device synchronized before and after the timed steps"},
        "memory": {"peak_allocated_bytes": peak, "peak_reserved_bytes": reserved, "per": "process",
                   "source": "torch.cuda.max_memory_allocated (timed steps)" if peak is not None else None},
        "mfu": None,
        "quality": {"metric": "loss", "higher_is_better": False, "final": None, "final_train_loss": loss.item()},
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".partial"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, a.out)
    print(f"{name}: {sps:.1f} samples/s, {sps * tokens_per_sample:.0f} tokens/s, "
          f"peak {peak / 2**30 if peak else 0:.2f} GiB, loss {loss.item():.4f} -> {a.out}")


if __name__ == "__main__":
    main()
