#!/usr/bin/env bash
# Train one OSUM-EChat stage (WeNet-style stages, options via tools/parse_options.sh).
#
#   bash train.sh                       # no --config: run the tiny CPU demo (recipes/demo), all 3 stages
#   bash train.sh --config recipes/echat/stage1_understanding/conf/train.yaml \
#        --data_s2t recipes/echat/stage1_understanding/conf/data_s2t.yaml \
#        --dir exp/stage1 --checkpoint /path/to/init.pt
#
# Stages:  0  data yamls -> training lists under $dir/data (and a cv list)
#          1  train (one process per GPU/NPU; torchrun across --num_nodes nodes)
# Devices: GPUs (nvidia-smi) or Ascend NPUs (npu-smi) are counted and all used;
#          restrict them with CUDA_VISIBLE_DEVICES / ASCEND_RT_VISIBLE_DEVICES, or set
#          --nproc_per_node. Without accelerators it trains on CPU (--nproc_per_node
#          CPU processes over gloo, default 1).
# Two nodes, 8 GPUs each (run on both, only --node_rank differs):
#   node 0: bash train.sh --config ... --num_nodes 2 --node_rank 0 --master_addr 10.0.0.1 --master_port 29401
#   node 1: bash train.sh --config ... --num_nodes 2 --node_rank 1 --master_addr 10.0.0.1 --master_port 29401
# Running the same command again resumes from the newest checkpoint in --dir.
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# OpenMP threads sleep when idle instead of spinning: on a CPU shared with another busy job the
# spinning default ran ~10x slower (osum_echat/threads.py, docs/troubleshooting.md "Shared CPU")
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

stage=0
stop_stage=1
config=""                  # training YAML; empty = run the demo recipe
dir=""                     # output: checkpoints, train.yaml, tensorboard/, final.pt
checkpoint=""              # initial model weights (the previous stage's final.pt)
data_s2t=""                # data yamls (name: {path, weight}) per direction; any may be empty
data_t2s=""
data_s2s=""
data_t2t=""
cv_data=""                 # cv list (same data_type); default: first entry of the s2t/first list
data_type=shard            # raw | shard | combine
data_root=""               # root for relative paths inside raw lists
train_engine=deepspeed     # deepspeed | torch_ddp (one process: torch_ddp runs as plain single)
deepspeed_config=conf/ds_stage2.json
deepspeed_save_states="model+optimizer"
use_amp=true
device=""                  # cuda | npu | cpu; empty = detect
nproc_per_node=""          # empty = number of GPUs/NPUs, or 1 on CPU
num_nodes=1
node_rank=0
master_addr=127.0.0.1
master_port=29401
num_workers=1
prefetch=50
max_steps=""               # stop after N optimizer steps (smoke runs)
dtype=""                   # float32 | bfloat16 | float16: dtype the model is built in (empty: float32)
data_index=""              # folder of the facts a resume seeks with (empty: DIR/data_index; none: off)
override=""                # extra --override_config items, space separated (key.sub=value)
help_message="usage: bash train.sh [--stage 0] [--stop_stage 1] --config YAML --dir DIR \
[--data_s2t YAML] [--data_t2s YAML] [--data_s2s YAML] [--data_t2t YAML] [--checkpoint PT] ...
(see the variables at the top of train.sh for every option)"

. tools/parse_options.sh

if [ -z "$config" ]; then
  echo "$0: no --config given: running the tiny CPU demo (recipes/demo/run.sh) under exp/demo"
  exec bash recipes/demo/run.sh "$@"
fi
[ -f "$config" ] || { echo "$0: --config $config not found" >&2; exit 1; }
[ -n "$dir" ] || { echo "$0: --dir is required (where checkpoints go)" >&2; exit 1; }
mkdir -p "$dir/data"

# ---- devices and process count ----------------------------------------------
if [ -z "$device" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then device=cuda
  elif command -v npu-smi >/dev/null 2>&1 && npu-smi info >/dev/null 2>&1; then device=npu
  else device=cpu; fi
fi
if [ -z "$nproc_per_node" ]; then
  case $device in
    cuda) nproc_per_node=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())") ;;
    npu)  nproc_per_node=$("$PYTHON" -c "import torch, torch_npu; print(torch.npu.device_count())") ;;
    *)    nproc_per_node=1 ;;
  esac
fi
case $device in cuda) backend=nccl ;; npu) backend=hccl ;; *) backend=gloo ;; esac
echo "$0: device=$device processes/node=$nproc_per_node nodes=$num_nodes backend=$backend engine=$train_engine"

# ---- stage 0: data yamls -> lists ---------------------------------------------
declare -A yamls=([s2t]=$data_s2t [t2s]=$data_t2s [s2s]=$data_s2s [t2t]=$data_t2t)
if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  for d in s2t t2s s2s t2t; do
    rm -f "$dir/data/$d.list"
    [ -n "${yamls[$d]}" ] || continue
    "$PYTHON" -m osum_echat.train.data_lists "${yamls[$d]}" "$dir/data/$d.list"
  done
  if [ -z "$cv_data" ]; then
    first=$(ls "$dir"/data/{s2t,s2s,t2s,t2t}.list 2>/dev/null | head -n 1 || true)
    [ -n "$first" ] || { echo "$0: no data: give at least one of --data_s2t/t2s/s2s/t2t" >&2; exit 1; }
    head -n 1 "$first" > "$dir/data/cv.list"   # as upstream: the first training entry
  fi
fi

# ---- stage 1: train ---------------------------------------------------------------
if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  args=(--train_engine "$train_engine" --config "$config" --data_type "$data_type"
        --model_dir "$dir" --tensorboard_dir "$dir/tensorboard" --device "$device"
        --ddp.dist_backend "$backend" --num_workers "$num_workers" --prefetch "$prefetch"
        --timeout 1200 --deepspeed.save_states "$deepspeed_save_states")
  n_lists=0
  for d in s2t t2s s2s t2t; do
    if [ -s "$dir/data/$d.list" ]; then args+=(--train_data_$d "$dir/data/$d.list"); n_lists=$((n_lists + 1)); fi
  done
  [ "$n_lists" -gt 0 ] || { echo "$0: no training lists in $dir/data: run stage 0 first" >&2; exit 1; }
  args+=(--cv_data "${cv_data:-$dir/data/cv.list}")
  [ "$train_engine" = deepspeed ] && args+=(--deepspeed_config "$deepspeed_config")
  [ "$use_amp" = true ] && args+=(--use_amp)
  [ "$device" = cpu ] || args+=(--pin_memory)
  [ -n "$checkpoint" ] && args+=(--checkpoint "$checkpoint")
  [ -n "$data_root" ] && args+=(--data_root "$data_root")
  [ -n "$max_steps" ] && args+=(--max_steps "$max_steps")
  [ -n "$dtype" ] && args+=(--dtype "$dtype")
  [ -n "$data_index" ] && args+=(--data_index "$data_index")
  for item in $override; do args+=(--override_config "$item"); done
  # One check of the config, model files and data lists before any process starts (no DeepSpeed
  # import): a mistake is one line and a non-zero exit, not a traceback per rank.
  check=(--config "$config" --device "$device" --data_type "$data_type")
  for d in s2t t2s s2s t2t; do
    if [ -s "$dir/data/$d.list" ]; then check+=(--data "$dir/data/$d.list"); fi
  done
  check+=(--data "${cv_data:-$dir/data/cv.list}")
  if [ -n "$data_root" ]; then check+=(--data_root "$data_root"); fi
  if [ -n "$checkpoint" ]; then check+=(--checkpoint "$checkpoint"); fi
  if [ "$train_engine" = deepspeed ]; then check+=(--deepspeed_config "$deepspeed_config"); fi
  for item in $override; do check+=(--override "$item"); done
  "$PYTHON" -m osum_echat.bin.check_config "${check[@]}" || exit 1
  export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
  export HCCL_CONNECT_TIMEOUT=${HCCL_CONNECT_TIMEOUT:-1200}
  if [ "$num_nodes" -eq 1 ] && [ "$nproc_per_node" -eq 1 ] && [ "$train_engine" != deepspeed ]; then
    "$PYTHON" -m osum_echat.bin.train "${args[@]}"
  else
    "$PYTHON" -m torch.distributed.run --nnodes="$num_nodes" --node_rank="$node_rank" \
      --nproc_per_node="$nproc_per_node" --master_addr="$master_addr" --master_port="$master_port" \
      -m osum_echat.bin.train "${args[@]}"
  fi
fi
