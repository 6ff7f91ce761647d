#!/usr/bin/env bash
# Issue 9 on ResNet-50 (tune_seeds.sh, 20 steps, 150 s each unless TUNE_STEPS / TUNE_TIME say):
#   -> OUT_DIR/tune_cifar10_resnet50_{baseline,optimized}.json, *_tuned.yaml
TUNE_TASK=cifar10_resnet50 TUNE_STEPS="${TUNE_STEPS:-20}" TUNE_TIME="${TUNE_TIME:-150}" \
  exec bash "$(dirname "${BASH_SOURCE[0]}")/tune_seeds.sh" "$@"
