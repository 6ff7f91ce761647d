#!/usr/bin/env bash
# Sets up and builds on first use, then runs experiments/quickstart.yaml. The last line printed
# is the path of the report. Extra arguments go to `efftrain run` (e.g. --set train.max_steps=50).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${EFFTRAIN_BUILD_DIR:-$root/build}"
"$root/scripts/build.sh"
cd "$root"
exec "$build/efftrain" run experiments/quickstart.yaml "$@"
