#!/usr/bin/env bash
# Issue 9: policy.mode auto on the GPU for both optimized seeds (as committed: fp16, adaptive k,
# sqrt checkpointing), each beside the same run without the policy: which optimizations it
# switched off, with the numbers behind them, and what that did to throughput and memory.
# Usage: policy_auto.sh OUT_DIR   -> OUT_DIR/policy_auto.json
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
export CUDA_VISIBLE_DEVICES=0
r50=(experiments/seed/cifar10_resnet50_optimized.yaml --set train.max_steps=120 --set train.eval_every=0
     --set train.timing_warmup_steps=20)
gpt=(experiments/seed/wikitext2_gpt2_optimized.yaml --set train.max_steps=40 --set train.eval_every=0
     --set train.timing_warmup_steps=10)
bench_run r50_as_written "${r50[@]}"
bench_run r50_policy_auto "${r50[@]}" --set policy.mode=auto
bench_run gpt2_as_written "${gpt[@]}"
bench_run gpt2_policy_auto "${gpt[@]}" --set policy.mode=auto
bench_collect "$out/policy_auto.json" "policy.mode auto on the optimized seeds" \
  r50_as_written r50_policy_auto gpt2_as_written gpt2_policy_auto
python3 - "$RUNS" <<'PY'
import json, sys
for n in ("r50_policy_auto", "gpt2_policy_auto"):
    try:
        j = json.load(open(f"{sys.argv[1]}/{n}/report.json"))
    except OSError:
        continue
    for d in j["optimizations"]["policy"]["decisions"]:
        print(n, d["step"], d["component"], d["action"], "-", d["why"])
PY
