#!/usr/bin/env bash
# Issue 8: candidate settings for the optimized ResNet-50 seed (learning-rate response to
# adaptive k, schedule length), each run with seed 0 to the seed's target (top-1 0.75) or
# R50_RECIPE_TIME_S (110) seconds of training, beside the baseline of the same seed on the other
# GPU (one GPU: all in turn). Writes r50_recipe.json and the trimmed reports in r50_recipe/.
# Usage: r50_recipe.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
cap="${R50_RECIPE_TIME_S:-110}"
other=$(( $(nvidia-smi -L | wc -l) > 1 ? 1 : 0 ))
declare -A variants=(
  [r50_recipe_as_written]=""
  [r50_recipe_sqrt_15ep]="accumulation.lr_response=sqrt schedule.total=750000"
  [r50_recipe_none_15ep]="schedule.total=750000"
)
order=(r50_recipe_sqrt_15ep r50_recipe_as_written r50_recipe_none_15ep)
run_variant() {  # GPU NAME SEED-EXPERIMENT
  local sets=()
  for s in ${variants[$2]}; do sets+=(--set "$s"); done
  CUDA_VISIBLE_DEVICES=$1 bench_run "$2" "experiments/seed/$3.yaml" --set train.max_time_s="$cap" "${sets[@]}"
}
CUDA_VISIBLE_DEVICES=0 bench_run r50_recipe_baseline experiments/seed/cifar10_resnet50_baseline.yaml \
  --set train.max_time_s="${EFFTRAIN_SEED_TIME_S:-400}" &
[ "$other" = 0 ] && wait
for n in "${order[@]}"; do run_variant "$other" "$n" cifar10_resnet50_optimized; done
wait
names=(r50_recipe_baseline "${order[@]}")
bench_collect "$out/r50_recipe.json" "ResNet-50 seed 0: baseline and candidate optimized settings, to top-1 0.75" "${names[@]}"
mkdir -p "$out/r50_recipe"
for n in "${names[@]}"; do
  f="$RUNS/$n/report.json"
  [ -f "$f" ] || continue
  bench_trim "$f" "$out/r50_recipe/$n.json"
  python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
a = j["optimizations"].get("accumulation", {})
print(sys.argv[2], j["status"], "ttt", j["result"].get("time_to_target_s"), "samples/s", round(j["throughput"]["samples_per_s"]),
      "k", [(h["step"], h["k"]) for h in a.get("k_history", [])],
      [(c["step"], round(c["time_s"], 1), round(c["value"], 4)) for c in j["quality"]["curve"]])' "$f" "$n" 2>&1
done
