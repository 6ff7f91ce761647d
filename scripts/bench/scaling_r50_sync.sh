#!/usr/bin/env bash
# Issues 7/11: ResNet-50 optimized (bf16, adamw_fused, channels_last, device input, b128/GPU)
# on 1 GPU and, with zero2 and with ddp, on 2 and 4 GPUs (as many as the machine has): where
# the multi-process cost of the launch-bound step goes. Every point runs eager and with
# train.cuda_graph (suffix _graph). R50_SYNC_COMM="fp32 bf16" runs each multi-GPU point with
# each distributed.comm_dtype named (suffix _bf16, ...; default fp32 only) and writes
# scaling_r50_sync_comm.json. Usage: scaling_r50_sync.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
gpus="$(nvidia-smi -L | wc -l)"
args=(experiments/bench/cifar10_resnet50_fp32.yaml --set task.data.input_path=device --set train.max_steps=200
      --set train.timing_warmup_steps=30 --set precision.mode=bf16 --set optim.name=adamw_fused
      --set task.model.channels_last=true)
names=()
suffixes=("" _graph)
[ "${R50_SYNC_GRAPH_ONLY:-0}" = 1 ] && suffixes=(_graph)   # only the train.cuda_graph points
for suffix in "${suffixes[@]}"; do
  mode=(--set train.cuda_graph=$([ -n "$suffix" ] && echo true || echo false))
  OMP_NUM_THREADS=1 bench_run "r50_sync_1gpu$suffix" "${args[@]}" "${mode[@]}"
  names+=("r50_sync_1gpu$suffix")
  for w in 2 4; do
    [ "$gpus" -ge "$w" ] || continue
    for sync in zero2 ddp; do
      for comm in ${R50_SYNC_COMM:-fp32}; do
        tag=$([ "$comm" = fp32 ] || echo "_$comm")
        bench_run "r50_sync_${w}gpu_$sync$suffix$tag" "${args[@]}" --nproc "$w" --set distributed.grad_sync=$sync \
          --set distributed.comm_dtype=$comm "${mode[@]}"
        names+=("r50_sync_${w}gpu_$sync$suffix$tag")
      done
    done
  done
done
bench_collect "$out/scaling_r50_sync$([ -n "${R50_SYNC_COMM:-}" ] && echo _comm).json" "ResNet-50 optimized: zero2 vs ddp over world sizes, same per-GPU batch" "${names[@]}"
