#!/usr/bin/env bash
# OSUM-EChat stage 2, generation (TTS, spoken and text dialogue, plus some understanding data).
#   bash recipes/echat/stage2_generation/run.sh [--checkpoint exp/echat/stage1/final.pt]
# Name your data in conf/data_{s2t,t2s,s2s,t2t}.yaml first. Output: $dir/final.pt for stage 3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."

dir=exp/echat/stage2
checkpoint=exp/echat/stage1/final.pt   # stage 1's output
data_type=shard
train_engine=deepspeed
nproc_per_node=""
num_nodes=1
node_rank=0
master_addr=127.0.0.1
master_port=29401
. tools/parse_options.sh

[ -f "$checkpoint" ] || { echo "$0: $checkpoint not found: run stage 1 first or pass --checkpoint" >&2; exit 1; }
bash train.sh --config "$here/conf/train.yaml" --dir "$dir" --data_type "$data_type" \
  --data_s2t "$here/conf/data_s2t.yaml" --data_t2s "$here/conf/data_t2s.yaml" \
  --data_s2s "$here/conf/data_s2s.yaml" --data_t2t "$here/conf/data_t2t.yaml" \
  --train_engine "$train_engine" --nproc_per_node "$nproc_per_node" --num_nodes "$num_nodes" \
  --node_rank "$node_rank" --master_addr "$master_addr" --master_port "$master_port" \
  --checkpoint "$checkpoint"
