#!/usr/bin/env bash
# Issue 8: the seed table on one GPU. Runs experiments/seed/*.yaml (baseline, optimized, bf16
# twin, both tasks) for the seeds in $EFFTRAIN_SEEDS (default 0) through scripts/sweep.sh, then
# writes OUT_DIR/seed_compare.md (efftrain compare), the plots, and the reports trimmed of their
# config (kept: status, result, throughput, memory, mfu, quality, optimizations, environment).
# Usage: seed.sh OUT_DIR    (long: each baseline runs to its target or its step limit)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
sweep="$RUNS/seed-sweep"
rm -rf "$sweep"
"$root/scripts/sweep.sh" -o "$sweep" -s "${EFFTRAIN_SEEDS:-0}" "$root"/experiments/seed/*.yaml -- \
  --set "task.data.root=$DATA" | tail -3
cp "$sweep/compare.md" "$out/seed_compare.md" 2>/dev/null
cp "$sweep/index.tsv" "$out/seed_index.tsv"
for task in cifar10_resnet50 wikitext2_gpt2; do
  python3 "$root/scripts/plot.py" -o "$out/plots_$task" "$sweep"/${task}_*/report.json > /dev/null 2>&1 ||
    echo "    (no plots for $task: matplotlib missing or no reports)"
done
mkdir -p "$out/seed_reports"
for r in "$sweep"/*/report.json; do
  python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
j["experiment"].pop("config", None)
json.dump(j, open(sys.argv[2], "w"), indent=1)' "$r" "$out/seed_reports/$(basename "$(dirname "$r")").json"
done
