#!/usr/bin/env bash
# OSUM-EChat stage 1, understanding (ASR + paralinguistic tasks; encoder and adapter train).
#   bash recipes/echat/stage1_understanding/run.sh --whisper /models/whisper/medium.pt
# Name your data in conf/data_s2t.yaml first. Multi-node: add --num_nodes 2 --node_rank R
# --master_addr HOST on every node (see train.sh). Output: $dir/final.pt for stage 2.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."

dir=exp/echat/stage1
whisper=""            # openai-whisper checkpoint (medium.pt) that initialises the encoder
checkpoint=""         # or: an OSUM-EChat .pt to start from instead
data_type=shard
train_engine=deepspeed
nproc_per_node=""     # empty: every visible GPU/NPU
num_nodes=1
node_rank=0
master_addr=127.0.0.1
master_port=29401
. tools/parse_options.sh

PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if [ -z "$checkpoint" ] && [ -n "$whisper" ]; then
  mkdir -p "$dir"
  checkpoint=$dir/encoder_init.pt
  [ -f "$checkpoint" ] || "$PYTHON" -m osum_echat.bin.convert_checkpoint \
    --config "$here/conf/train.yaml" --whisper "$whisper" --output "$checkpoint"
fi
[ -n "$checkpoint" ] || echo "$0: warning: no --whisper or --checkpoint: the encoder starts random" >&2

bash train.sh --config "$here/conf/train.yaml" --dir "$dir" --data_type "$data_type" \
  --data_s2t "$here/conf/data_s2t.yaml" --train_engine "$train_engine" \
  --nproc_per_node "$nproc_per_node" --num_nodes "$num_nodes" --node_rank "$node_rank" \
  --master_addr "$master_addr" --master_port "$master_port" ${checkpoint:+--checkpoint "$checkpoint"}
