#!/usr/bin/env bash
# Sets up and builds on first use, then runs the test suite (CPU tests; GPU tests carry the
# ctest label "gpu" and run only with EFFTRAIN_TEST_LABEL=gpu or =all).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${EFFTRAIN_BUILD_DIR:-$root/build}"
"$root/scripts/build.sh"
label="${EFFTRAIN_TEST_LABEL:-cpu}"
args=(--test-dir "$build" --output-on-failure -j "${EFFTRAIN_TEST_JOBS:-$(nproc)}")
[ "$label" = all ] || args+=(-L "^${label}\$")
exec ctest "${args[@]}" "$@"
