#!/usr/bin/env bash
# Runs a list of experiments over a matrix of overrides and several seeds, goes on past a failed
# run (marked in index.tsv), keeps every run folder under one folder, and ends with the
# `efftrain compare` table of all reports (compare.md).
#
#   scripts/sweep.sh [-o DIR] [-s SEEDS] [-m KEY=V1,V2,...]... EXPERIMENT... [-- EFFTRAIN-RUN-ARGS...]
#     -o DIR    output folder (default runs/sweep-<UTC>); must not exist or be empty
#     -s SEEDS  comma-separated train.seed values (default: the experiment's own seed)
#     -m AXIS   one matrix axis; several -m give their cross product
#   e.g. scripts/sweep.sh -s 0,1,2 -m precision.mode=fp32,fp16,bf16 -m checkpointing.policy=none,sqrt \
#          experiments/bench/wikitext2_gpt2_fp32.yaml -- --set train.max_steps=50
#
# Each run is DIR/<experiment>__<key>=<value>...__seed=<s>/ (report.json, metrics.jsonl, run.log).
# index.tsv: name, experiment, overrides, seed, exit code, status. Exit code: 0 when every run
# succeeded, 1 when some failed (the rest still ran), 2 for bad arguments.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EFFTRAIN="${EFFTRAIN:-$root/build/efftrain}"
usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; }
die() { echo "sweep: error: $*" >&2; exit 2; }

out="" seeds="" axes=() exps=() extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o) [ $# -ge 2 ] || die "-o needs a folder"; out="$2"; shift 2 ;;
    -s) [ $# -ge 2 ] || die "-s needs seeds, e.g. 0,1,2"; seeds="$2"; shift 2 ;;
    -m) [ $# -ge 2 ] || die "-m needs KEY=V1,V2"; [[ "$2" == *=* ]] || die "-m $2: expected KEY=V1,V2,..."
        axes+=("$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    -*) die "unknown option $1 (see scripts/sweep.sh -h)" ;;
    *) [ -f "$1" ] || die "$1: experiment file not found"; exps+=("$1"); shift ;;
  esac
done
[ ${#exps[@]} -gt 0 ] || { usage; die "no experiment given"; }
[[ -z "$seeds" || "$seeds" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "-s $seeds: expected comma-separated integers"
[ -x "$EFFTRAIN" ] || "$root/scripts/build.sh" || die "build failed"
out="${out:-runs/sweep-$(date -u +%Y%m%dT%H%M%SZ)}"
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then die "$out: exists and is not empty"; fi
mkdir -p "$out"

# The cross product of the axes: one line per combination, "key=value key=value ...".
combos=("")
for axis in "${axes[@]}"; do
  key="${axis%%=*}" values="${axis#*=}" next=()
  [ -n "$values" ] || die "-m $axis: no values"
  IFS=',' read -r -a vs <<< "$values"
  for c in "${combos[@]}"; do for v in "${vs[@]}"; do next+=("${c:+$c }$key=$v"); done; done
  combos=("${next[@]}")
done
IFS=',' read -r -a seed_list <<< "${seeds:-}"
[ ${#seed_list[@]} -gt 0 ] || seed_list=("")

printf 'name\texperiment\toverrides\tseed\texit\tstatus\n' > "$out/index.tsv"
failed=0 total=0
for exp in "${exps[@]}"; do
  base="$(basename "$exp" .yaml)"
  for combo in "${combos[@]}"; do
    for seed in "${seed_list[@]}"; do
      name="$base"
      args=()
      for kv in $combo; do name+="__$kv"; args+=(--set "$kv"); done
      [ -n "$seed" ] && { name+="__seed=$seed"; args+=(--set "train.seed=$seed"); }
      name="${name//\//_}"
      total=$((total + 1))
      "$EFFTRAIN" run "$exp" "${args[@]}" "${extra[@]}" --out "$out/$name" > "$out/$name.log" 2>&1
      rc=$?
      status="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$out/$name/report.json" 2>/dev/null || echo "no report")"
      [ -d "$out/$name" ] && mv "$out/$name.log" "$out/$name/run.log"
      [ $rc = 0 ] || failed=$((failed + 1))
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$exp" "$combo" "${seed:--}" "$rc" "$status" >> "$out/index.tsv"
      echo "sweep: $name: exit $rc, $status"
    done
  done
done

reports=()
for r in "$out"/*/report.json; do [ -f "$r" ] && reports+=("$r"); done
if [ ${#reports[@]} -gt 0 ]; then
  "$EFFTRAIN" compare "${reports[@]}" > "$out/compare.md" && cat "$out/compare.md"
fi
echo "sweep: $total runs, $failed failed; $out/index.tsv, $out/compare.md"
[ $failed = 0 ]
