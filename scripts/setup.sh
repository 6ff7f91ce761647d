#!/usr/bin/env bash
# Installs what efftrain needs to build, idempotently and quietly when nothing is missing.
#  - Debian packages: yaml-cpp, CLI11, spdlog, fmt, nlohmann-json, Catch2 3 (bookworm-backports),
#    ninja, ccache. Skipped when the headers are already there (the GPU machine has them and no network).
#  - LibTorch 2.11.0: a python3 that already imports torch 2.11.0 is used as is; otherwise the
#    torch==2.11.0 wheel goes into a virtualenv under $EFFTRAIN_CACHE (default ~/.cache/efftrain).
#    A user-provided Torch_DIR or CMAKE_PREFIX_PATH (LibTorch zip) skips this step.
#  - matplotlib for scripts/plot.py, best effort (into that virtualenv when it exists): a machine
#    without it (the GPU machine has no network) builds and tests as before, without plots.
# Prints nothing on success when nothing had to be done. Writes $EFFTRAIN_CACHE/torch-prefix and
# $EFFTRAIN_CACHE/plot-python (a python3 that imports matplotlib).
set -euo pipefail

EFFTRAIN_CACHE="${EFFTRAIN_CACHE:-$HOME/.cache/efftrain}"
TORCH_VERSION_WANTED="2.11.0"
mkdir -p "$EFFTRAIN_CACHE"

say() { echo "setup: $*" >&2; }

have_header() { [ -e "/usr/include/$1" ] || [ -e "/usr/local/include/$1" ]; }

missing=()
have_header yaml-cpp/yaml.h || missing+=(libyaml-cpp-dev)
have_header CLI/CLI.hpp || missing+=(libcli11-dev)
have_header spdlog/spdlog.h || missing+=(libspdlog-dev)
have_header fmt/format.h || missing+=(libfmt-dev)
have_header nlohmann/json.hpp || missing+=(nlohmann-json3-dev)
command -v ninja >/dev/null || missing+=(ninja-build)
optional=()
command -v ccache >/dev/null || optional+=(ccache)
need_catch2=0
have_header catch2/catch_test_macros.hpp || need_catch2=1

# ccache only speeds builds up: where it cannot be installed (no network), build without it.
if [ ${#optional[@]} -gt 0 ] && [ ! -f "$EFFTRAIN_CACHE/no-ccache" ]; then missing+=("${optional[@]}"); fi
if [ ${#missing[@]} -gt 0 ] || [ $need_catch2 = 1 ]; then
  only_optional=0
  [ $need_catch2 = 0 ] && [ "${missing[*]}" = "${optional[*]}" ] && only_optional=1
  if ! command -v apt-get >/dev/null; then
    say "missing packages (${missing[*]} catch2-3) and no apt-get: install them by hand"; exit 1
  fi
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if [ $need_catch2 = 1 ] && grep -q 'bookworm' /etc/os-release 2>/dev/null; then
    src=/etc/apt/sources.list.d/efftrain-backports.sources
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      say "enabling bookworm-backports for Catch2 3"
      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        | $SUDO tee "$src" >/dev/null
    fi
  fi
  catch2_name=""; [ $need_catch2 = 1 ] && catch2_name="catch2 (3)"
  say "installing ${missing[*]} $catch2_name"
  if [ $only_optional = 1 ]; then
    if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}"; } >/dev/null 2>&1; then
      say "could not install ${missing[*]} (no network?); building without it"
      touch "$EFFTRAIN_CACHE/no-ccache"
    fi
    missing=()
  else
    $SUDO apt-get update -qq
  fi
  [ ${#missing[@]} -eq 0 ] || $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ $need_catch2 = 1 ]; then
    if grep -q 'bookworm' /etc/os-release 2>/dev/null; then
      $SUDO apt-get install -y -qq -t bookworm-backports catch2 >/dev/null
    else
      $SUDO apt-get install -y -qq catch2 >/dev/null
    fi
  fi
fi

# --- LibTorch -------------------------------------------------------------------------------
prefix_file="$EFFTRAIN_CACHE/torch-prefix"
if [ -n "${Torch_DIR:-}" ] || [ -n "${CMAKE_PREFIX_PATH:-}" ]; then
  : # the user points CMake at their own LibTorch
else
  torch_prefix_of() {
    "$1" - <<PY 2>/dev/null
import torch, torch.utils
v = torch.__version__.split('+')[0]
if v != "$TORCH_VERSION_WANTED":
    raise SystemExit(1)
print(torch.utils.cmake_prefix_path)
PY
  }
  prefix=""
  # Fast path: the prefix found last time still holds torch 2.11.0 (no Python start-up).
  if [ -f "$prefix_file" ]; then
    cached="$(cat "$prefix_file")"
    if [ -f "$cached/Torch/TorchConfig.cmake" ] &&
       grep -qs "^__version__ = '$TORCH_VERSION_WANTED" "$cached/../../version.py"; then
      prefix="$cached"
    fi
  fi
  [ -n "$prefix" ] || for py in "${EFFTRAIN_PYTHON:-}" "$EFFTRAIN_CACHE/venv/bin/python3" python3; do
    [ -n "$py" ] || continue
    command -v "$py" >/dev/null 2>&1 || continue
    if prefix="$(torch_prefix_of "$py")" && [ -n "$prefix" ]; then break; fi
    prefix=""
  done
  if [ -z "$prefix" ]; then
    say "installing torch==$TORCH_VERSION_WANTED into $EFFTRAIN_CACHE/venv (large download, once per machine)"
    [ -x "$EFFTRAIN_CACHE/venv/bin/python3" ] || python3 -m venv "$EFFTRAIN_CACHE/venv"
    "$EFFTRAIN_CACHE/venv/bin/pip" install -q "torch==$TORCH_VERSION_WANTED"
    prefix="$(torch_prefix_of "$EFFTRAIN_CACHE/venv/bin/python3")"
  fi
  if [ ! -f "$prefix_file" ] || [ "$(cat "$prefix_file")" != "$prefix" ]; then
    echo "$prefix" > "$prefix_file.tmp" && mv "$prefix_file.tmp" "$prefix_file"
  fi
fi

# matplotlib (scripts/plot.py): best effort, once per machine ($EFFTRAIN_CACHE/no-matplotlib
# remembers that it could not be had; delete it to try again).
plot_file="$EFFTRAIN_CACHE/plot-python"
if [ ! -f "$EFFTRAIN_CACHE/no-matplotlib" ] && { [ ! -s "$plot_file" ] || ! [ -x "$(cat "$plot_file")" ]; }; then
  rm -f "$plot_file"
  for py in "$EFFTRAIN_CACHE/venv/bin/python3" "$(command -v python3 || true)"; do
    if [ -x "$py" ] && "$py" -c 'import matplotlib' 2>/dev/null; then echo "$py" > "$plot_file"; break; fi
  done
  if [ ! -s "$plot_file" ]; then
    if [ -x "$EFFTRAIN_CACHE/venv/bin/pip" ] && say "installing matplotlib into $EFFTRAIN_CACHE/venv (scripts/plot.py)" &&
       "$EFFTRAIN_CACHE/venv/bin/pip" install -q matplotlib >/dev/null 2>&1; then
      echo "$EFFTRAIN_CACHE/venv/bin/python3" > "$plot_file"
    else
      say "no matplotlib on this machine: scripts/plot.py will not work here"
      touch "$EFFTRAIN_CACHE/no-matplotlib"
    fi
  fi
fi
