# What a benchmark JSON records as its command (sourced by scripts/gpu-check.sh and common.sh):
# the settings the benchmarks read from the environment (the knobs scripts/bench/*.sh document)
# and the tree. EFFTRAIN_TREE=<commit> names the tree where the copy's git metadata lags the
# working tree (in the sixth session every device call read b66d18e+changes, the HEAD before that
# session's commits). Needs $root, the repository root.
bench_knobs() {
  env | grep -E '^(ABLATION|BENCH_GPU|GAPS|GRID|ISSUE12|NCCL|PC|R50|SCALING|SEED|TRACE|TUNE|EFFTRAIN_SEED)[A-Z0-9_]*=' | sort |
    sed -E "s/=(.*)/='\1'/" | tr '\n' ' '
}

bench_tree() {
  local tree
  if [ -n "${EFFTRAIN_TREE:-}" ]; then
    echo "$EFFTRAIN_TREE"
  elif tree="$(git -C "$root" rev-parse --short HEAD 2>/dev/null)"; then
    git -C "$root" diff --quiet HEAD || tree+="+changes"
    echo "$tree"
  else
    echo unknown
  fi
}
