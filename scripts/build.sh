#!/usr/bin/env bash
# Sets up (first use) and builds efftrain into build/ (or $EFFTRAIN_BUILD_DIR) with Ninja.
# Quiet when there is nothing to do. Usage: scripts/build.sh [extra cmake --build args]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EFFTRAIN_CACHE="${EFFTRAIN_CACHE:-$HOME/.cache/efftrain}"
build="${EFFTRAIN_BUILD_DIR:-$root/build}"

"$root/scripts/setup.sh"
export CCACHE_DIR="${CCACHE_DIR:-$EFFTRAIN_CACHE/ccache}"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"

if [ ! -f "$build/build.ninja" ]; then
  args=(-S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${EFFTRAIN_BUILD_TYPE:-RelWithDebInfo}")
  if [ -z "${Torch_DIR:-}" ] && [ -z "${CMAKE_PREFIX_PATH:-}" ] && [ -f "$EFFTRAIN_CACHE/torch-prefix" ]; then
    args+=(-DCMAKE_PREFIX_PATH="$(cat "$EFFTRAIN_CACHE/torch-prefix")")
  fi
  cmake "${args[@]}" >"$EFFTRAIN_CACHE/configure.log" 2>&1 || { cat "$EFFTRAIN_CACHE/configure.log" >&2; exit 1; }
fi
jobs="${EFFTRAIN_JOBS:-$(nproc)}"
# Ninja prints only when it has work; keep its progress off a quiet no-op.
out="$(cmake --build "$build" -j "$jobs" "$@" 2>&1)" || { echo "$out" >&2; exit 1; }
echo "$out" | grep -v -E '^ninja: no work to do\.$|^\[[0-9]+/[0-9]+\] ' >&2 || true
