#!/usr/bin/env bash
# Issue 8 on GPT-2 / WikiText-2: the seed experiments with three seeds (0, 1, 2), needs four
# GPUs. GPUs 0-2 run the baseline of one seed each and then that seed's bf16 twin of the
# optimized recipe; GPU 3 runs the optimized recipe (fp16) for the three seeds one after
# another. Each run stops at its target or after EFFTRAIN_SEED_TIME_S (400) seconds of training.
# Then `efftrain compare` groups the seeds (median [min-max]).
# Usage: seed_gpt2_seeds.sh OUT_DIR -> OUT_DIR/seed3_reports/*.json, OUT_DIR/seed3_compare_wikitext2_gpt2.md
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
cap="${EFFTRAIN_SEED_TIME_S:-400}"
seed_run() {  # GPU EXPERIMENT SEED
  CUDA_VISIBLE_DEVICES=$1 bench_run "${2}_s$3" "experiments/seed/$2.yaml" --set train.max_time_s="$cap" \
    --set train.seed="$3"
}
for s in 0 1 2; do
  (seed_run "$s" wikitext2_gpt2_baseline "$s"; seed_run "$s" wikitext2_gpt2_optimized_bf16 "$s") &
done
(for s in 0 1 2; do seed_run 3 wikitext2_gpt2_optimized "$s"; done) &
wait
mkdir -p "$out/seed3_reports"
reports=()
for r in wikitext2_gpt2_baseline wikitext2_gpt2_optimized wikitext2_gpt2_optimized_bf16; do
  for s in 0 1 2; do
    f="$RUNS/${r}_s$s/report.json"
    [ -f "$f" ] || continue
    reports+=("$f")
    python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
j["experiment"].pop("config", None)
json.dump(j, open(sys.argv[2], "w"), indent=1)' "$f" "$out/seed3_reports/${r}_s$s.json"
  done
done
"$EFFTRAIN" compare "${reports[@]}" > "$out/seed3_compare_wikitext2_gpt2.md" 2>&1
cat "$out/seed3_compare_wikitext2_gpt2.md"
