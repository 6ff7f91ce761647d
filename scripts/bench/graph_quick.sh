#!/usr/bin/env bash
# A quick look at train.cuda_graph on one GPU: ResNet-50 b128 (launch-bound) and GPT-2 b32, bf16
# + fused AdamW + the fast paths, eager then graph. Usage: graph_quick.sh OUT_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$1"
r50=(experiments/bench/cifar10_resnet50_fp32.yaml --set precision.mode=bf16 --set optim.name=adamw_fused
     --set task.model.channels_last=true --set task.data.input_path=device --set train.timing_warmup_steps=20
     --set train.batch_size=128 --set train.max_steps=150)
gpt=(experiments/bench/wikitext2_gpt2_fp32.yaml --set precision.mode=bf16 --set optim.name=adamw_fused
     --set task.model.attention=sdpa --set train.max_steps=25)
names=()
for g in false true; do
  CUDA_VISIBLE_DEVICES=0 bench_run "q_r50_b128_graph_$g" "${r50[@]}" --set train.cuda_graph=$g
  CUDA_VISIBLE_DEVICES=0 bench_run "q_gpt2_graph_$g" "${gpt[@]}" --set train.cuda_graph=$g
  names+=("q_r50_b128_graph_$g" "q_gpt2_graph_$g")
done
bench_collect "$out/graph_quick.json" "train.cuda_graph false vs true, one GPU" "${names[@]}"
