#!/usr/bin/env bash
# Issue 4: GPT-2 small b32 x 1024 fp32 with the plain and the SDPA attention. Usage: gpt2_attention.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
for a in plain sdpa; do
  bench_run "gpt2_fp32_b32_${a}" experiments/bench/wikitext2_gpt2_fp32.yaml --set task.model.attention=$a
done
bench_collect "$out/wikitext2_gpt2_attention.json" "GPT-2 small b32x1024 fp32 attention paths" gpt2_fp32_b32_plain gpt2_fp32_b32_sdpa
