#!/usr/bin/env bash
# OSUM-EChat stage 3 (empathy) with LoRA on one 24 GB GPU (see README.md here for the measured memory).
#   bash recipes/echat/stage3_empathy_lora_24gb/run.sh [--checkpoint exp/echat/stage2/final.pt]
# Name your data in conf/data_{s2t,s2s}.yaml first. Output: $dir/final.pt for inference
# (its LoRA weights load into a use_lora: true config).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."

dir=exp/echat/stage3_lora
checkpoint=exp/echat/stage2/final.pt   # stage 2's output, or the released language_think_final.pt
data_type=shard
train_engine=deepspeed
nproc_per_node=""
. tools/parse_options.sh

[ -f "$checkpoint" ] || { echo "$0: $checkpoint not found: run stage 2 first or pass --checkpoint" >&2; exit 1; }
bash train.sh --config "$here/conf/train.yaml" --dir "$dir" --data_type "$data_type" \
  --data_s2t "$here/conf/data_s2t.yaml" --data_s2s "$here/conf/data_s2s.yaml" \
  --train_engine "$train_engine" --nproc_per_node "$nproc_per_node" --dtype bfloat16 \
  --checkpoint "$checkpoint"
