#!/usr/bin/env bash
# Issue 9 on GPT-2 (tune_seeds.sh): -> OUT_DIR/tune_wikitext2_gpt2_{baseline,optimized}.json, *_tuned.yaml
TUNE_TASK=wikitext2_gpt2 exec bash "$(dirname "${BASH_SOURCE[0]}")/tune_seeds.sh" "$@"
