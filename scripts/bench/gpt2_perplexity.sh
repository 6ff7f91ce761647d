#!/usr/bin/env bash
# Issue 4: GPT-2 small trains on the real WikiText-2 on a GPU and reports perplexity over the
# whole validation split (bf16, SDPA, 300 steps). Usage: gpt2_perplexity.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
bench_run gpt2_bf16_300steps experiments/bench/wikitext2_gpt2_fp32.yaml --set task.model.attention=sdpa \
  --set precision.mode=bf16 --set optim.name=adamw_fused --set optim.lr=3e-4 --set train.max_steps=300 \
  --set train.eval_every=150 --set task.data.eval_limit=0
bench_collect "$out/wikitext2_gpt2_perplexity.json" "GPT-2 small on WikiText-2, full validation perplexity" gpt2_bf16_300steps
