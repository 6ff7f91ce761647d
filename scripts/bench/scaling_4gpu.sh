#!/usr/bin/env bash
# Issue 11 (and 7): both seed tasks at world size 1, 2 and 4 (as many as the machine has) with
# the same per-GPU batch, baseline (fp32, adamw, ddp) and optimized (bf16, adamw_fused, zero2;
# ResNet-50 channels_last; GPT-2 SDPA; device-resident input for both). Accumulation and
# activation checkpointing stay off so that every point does the same work per sample. The
# 1-GPU runs get OMP_NUM_THREADS=1, as the launcher gives every worker. ResNet-50 optimized
# also runs with distributed.bind_cpus=true. Usage: scaling_4gpu.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
gpus="$(nvidia-smi -L | wc -l)"
worlds=(1)
for w in 2 4; do [ "$gpus" -ge "$w" ] && worlds+=("$w"); done
r50_base=(experiments/bench/cifar10_resnet50_fp32.yaml --set task.data.input_path=device
          --set train.max_steps=200 --set train.timing_warmup_steps=30)
r50_opt=("${r50_base[@]}" --set precision.mode=bf16 --set optim.name=adamw_fused --set task.model.channels_last=true
         --set distributed.auto_sync=zero2)
gpt_base=(experiments/bench/wikitext2_gpt2_fp32.yaml --set train.max_steps=30 --set train.timing_warmup_steps=8)
gpt_opt=("${gpt_base[@]}" --set precision.mode=bf16 --set optim.name=adamw_fused --set task.model.attention=sdpa
         --set distributed.auto_sync=zero2)
for task in r50 gpt; do
  for cfg in base opt; do
    eval "args=(\"\${${task}_${cfg}[@]}\")"
    bench_series "${task}_${cfg}" "${worlds[*]}" "${args[@]}"
    names=("${SERIES_NAMES[@]}")
    if [ "$task$cfg" = r50opt ]; then
      for w in "${worlds[@]:1}"; do
        bench_run "${task}_${cfg}_${w}gpu_bind" "${args[@]}" --nproc "$w" --set distributed.bind_cpus=true
        names+=("${task}_${cfg}_${w}gpu_bind")
      done
    fi
    bench_collect "$out/scaling_${task}_${cfg}.json" "$task $cfg: world sizes ${worlds[*]}, same per-GPU batch" "${names[@]}"
  done
done
