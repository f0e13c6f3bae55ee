#!/usr/bin/env bash
# Batch inference over a raw / shard / combine list, split over processes, merged in list order.
#
#   bash infer_with_shards_or_raw.sh --checkpoint exp/demo/stage1/final.pt \
#        --data exp/demo/data/lists/s1_asr.jsonl --output exp/demo/infer/text [--nj 2]
#        [--greedy] [--decode_batch_size 8] [--dtype bfloat16] [--prompt_style upstream_infer] [--top_k 5 ...]
#
# Several machines (torchrun; the same command on each, OUT on a filesystem they all see):
#   bash infer_with_shards_or_raw.sh ... --nnodes 2 --node_rank 0 --master_addr HOST [--master_port 29511]
#   bash infer_with_shards_or_raw.sh ... --nnodes 2 --node_rank 1 --master_addr HOST [--master_port 29511]
# Upstream's names work too: --test_data_path --infer_res_path --data_type --checkpoint_path
# --cosyvoice_model_path --gpu_ids "0 1" --per_gpu_processes N. Paths are taken from the
# working directory. Without --config, the train.yaml saved beside the checkpoint is used.
# Processes: one per GPU/NPU in --gpu_ids (default: all found) x --per_gpu_processes; with no
# accelerator, --per_gpu_processes (or --nj) CPU processes. Writes OUT (key<TAB>text), OUT.jsonl,
# OUT.failed (key<TAB>reason), OUT.report.json, OUT.report.txt and, with --cosyvoice_model_path,
# OUT_wavs/KEY.wav. Running the same command again resumes (see osum_echat/infer/batch.py).
set -euo pipefail
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-$( [ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3 )}

config=""                 # default: train.yaml beside the checkpoint
checkpoint=""; checkpoint_path=""
data=""; test_data_path=""
data_type=raw             # raw | shard | combine
root=""                   # folder relative wav paths in the list are read against (default: the list's folder, then cwd)
output=""; infer_res_path=""
cosyvoice_model_path=""   # token2wav model: speech outputs rendered to OUT_wavs/KEY.wav
device=""                 # cuda | npu | cpu; empty = detect
gpu_ids=""                # "0 1": accelerators to use; empty = every one found
per_gpu_processes=1       # processes per accelerator (CPU only: the number of processes)
nj=""                     # total processes (of this machine), overriding the two above
nnodes=1                  # machines: > 1 runs the processes under torchrun, one command per machine
node_rank=0               #   (the same command on each, only --node_rank differs; OUT on a shared filesystem)
master_addr=127.0.0.1     #   the address of node 0
master_port=29511
num_workers=0             # dataloader workers per process
extra=""                  # more options for osum_echat.bin.infer, e.g. "--greedy --decode_batch_size 8 --prompt '...'"
help_message="usage: bash infer_with_shards_or_raw.sh --checkpoint CKPT --data LIST --output OUT [--config YAML]
  [--data_type raw|shard|combine] [--root DIR] [--cosyvoice_model_path DIR] [--device D] [--gpu_ids '0 1']
  [--per_gpu_processes N] [--nj N] [--num_workers N] [--extra '...']
  [--nnodes N --node_rank R --master_addr HOST --master_port PORT]   (upstream's --test_data_path,
  --infer_res_path, --checkpoint_path are accepted)
  decoding, passed to every process: [--greedy] [--decode_batch_size N] [--dtype float32|bfloat16|float16]
  [--prompt_style train|upstream_infer] [--top_k K] [--temperature T] ... (any osum_echat.bin.infer option)"

# Options that are not this script's variables (--greedy, --decode_batch_size 8, --dtype bfloat16,
# --prompt_style upstream_infer, --top_k 5, ...) go to every osum_echat.bin.infer process as given,
# with their value when the next word is not an option; bin.infer rejects what it does not know.
_script_args=(); _infer_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) _script_args+=("$1"); shift; continue ;;
    --*) ;;
    *) _script_args+=("$@"); break ;;
  esac
  _opt=${1%%=*}; _opt=${_opt#--}; _opt=${_opt//-/_}
  _words=("$1"); shift
  if declare -p "$_opt" >/dev/null 2>&1; then  # this script's: always `--name value` (or --name=value)
    [[ ${_words[0]} == *=* ]] || [ $# -eq 0 ] || { _words+=("$1"); shift; }
    _script_args+=("${_words[@]}")
  else
    [[ ${_words[0]} == *=* ]] || [ $# -eq 0 ] || [[ $1 == --* ]] || { _words+=("$1"); shift; }
    _infer_args+=("${_words[@]}")
  fi
done
set -- ${_script_args[@]+"${_script_args[@]}"}
. "$here/tools/parse_options.sh"

checkpoint=${checkpoint:-$checkpoint_path}; data=${data:-$test_data_path}; output=${output:-$infer_res_path}
for v in checkpoint data output; do
  [ -n "${!v}" ] || { echo "error: --$v is required"; echo "$help_message"; exit 2; }
done
[ -f "$data" ] || { echo "error: data list '$data' not found"; exit 2; }
[ -f "$checkpoint" ] || { echo "error: checkpoint '$checkpoint' not found"; exit 2; }

ids=()
if [ -n "$gpu_ids" ]; then
  read -r -a ids <<< "$gpu_ids"; device=${device:-cuda}
elif [ -z "$device" ] || [ "$device" = cuda ]; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    n=$(nvidia-smi -L 2>/dev/null | grep -c GPU || true)
    [ "$n" -gt 0 ] && { device=cuda; ids=($(seq 0 $((n - 1)))); }
  fi
fi
if [ ${#ids[@]} -eq 0 ] && { [ -z "$device" ] || [ "$device" = npu ]; }; then
  if command -v npu-smi >/dev/null 2>&1; then
    n=$(npu-smi info -l 2>/dev/null | grep -c "NPU ID" || true)
    [ "$n" -gt 0 ] && { device=npu; ids=($(seq 0 $((n - 1)))); }
  fi
fi
device=${device:-cpu}
if [ "$device" = cpu ]; then ids=(); procs=${nj:-$per_gpu_processes}; else procs=${nj:-$(( ${#ids[@]} * per_gpu_processes ))}; fi
[ "$procs" -ge 1 ] || { echo "error: no processes to run (--nj / --per_gpu_processes must be >= 1)"; exit 2; }
if [ "$device" = cpu ] && [ -z "${OMP_NUM_THREADS:-}" ]; then  # the usable cores (affinity, cgroup quota), shared out
  cpus=$("$PYTHON" -c "from osum_echat.threads import available_cpus; print(available_cpus())")
  export OMP_NUM_THREADS=$(( cpus / procs > 0 ? cpus / procs : 1 ))
fi
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # see osum_echat/threads.py

mkdir -p "$(dirname "$output")"
split_dir="$output.split$procs"
[ "$nnodes" -gt 1 ] || { mkdir -p "$split_dir"; rm -f "$split_dir/.done"; }
common=(--checkpoint "$checkpoint" --data_type "$data_type" --data "$data" --output "$output"
        --num_workers "$num_workers")
[ -n "$config" ] && common+=(--config "$config")
[ -n "$root" ] && common+=(--root "$root")
[ -n "$cosyvoice_model_path" ] && common+=(--cosyvoice_model_path "$cosyvoice_model_path")
eval "extra_args=($extra)"  # word-split like a command line, so quoted values (--prompt '...') stay whole
extra_args+=(${_infer_args[@]+"${_infer_args[@]}"})
if [ "$nnodes" -gt 1 ]; then  # torchrun: every rank its share, rank 0 merges (osum_echat/job_ranks.py)
  [ ${#ids[@]} -gt 0 ] && export CUDA_VISIBLE_DEVICES=$(IFS=,; echo "${ids[*]}") ASCEND_RT_VISIBLE_DEVICES=$(IFS=,; echo "${ids[*]}")
  logs="$output.split$((nnodes * procs)).logs/node$node_rank"
  echo "decoding $data ($data_type): node $node_rank of $nnodes, $procs process(es) on $device; logs: $logs"
  exec "$PYTHON" -m torch.distributed.run --nnodes "$nnodes" --node_rank "$node_rank" --nproc_per_node "$procs" \
    --master_addr "$master_addr" --master_port "$master_port" --log_dir "$logs" --redirects 3 --tee 3 \
    --local_ranks_filter 0 -m osum_echat.bin.infer "${common[@]}" --device "$device" \
    --per_device_processes "$per_gpu_processes" "${extra_args[@]}"
fi
echo "decoding $data ($data_type) with $procs process(es) on $device; logs: $split_dir/log.N"
pids=()
for ((i = 0; i < procs; i++)); do
  dev=$device
  [ "$device" != cpu ] && dev="$device:${ids[$(( (i / per_gpu_processes) % ${#ids[@]} ))]}"
  $PYTHON -m osum_echat.bin.infer "${common[@]}" --device "$dev" --rank "$i" --world_size "$procs" --no_merge \
    "${extra_args[@]}" > "$split_dir/log.$i" 2>&1 &
  pids+=($!)
done
$PYTHON -m osum_echat.infer.progress --output "$output" --world_size "$procs" --data "$data" --data_type "$data_type" &
watcher=$!
failed=()
for ((i = 0; i < procs; i++)); do wait "${pids[$i]}" || failed+=("$i"); done
touch "$split_dir/.done"; wait "$watcher" || true
# the first warning of each length cap the processes hit, once (every hit is counted in the report)
for cap in max_text_tokens max_speech_tokens; do
  line=$(grep -h -m1 "the $cap cap; the output is cut" "$split_dir"/log.* 2>/dev/null | head -n 1 || true)
  [ -z "$line" ] || echo "warning: ${line#*WARNING osum_echat.infer: }"
done
if [ ${#failed[@]} -gt 0 ]; then
  last=""
  for i in "${failed[@]}"; do  # one line per distinct error (a config error stops every process alike)
    msg=$(grep -m1 -E "^error:|^[a-z_]+\.py: error:" "$split_dir/log.$i" || tail -n 3 "$split_dir/log.$i")
    [ "$msg" = "$last" ] || echo "process $i stopped: $msg   (log: $split_dir/log.$i)"
    last=$msg
  done
  if ! grep -q "^error:" "$split_dir/log.${failed[0]}"; then
    $PYTHON -m osum_echat.infer.results --output "$output" --world_size "$procs" || true
    echo "the utterances of the stopped process(es) are in neither $output nor $output.failed: rerun the same command to resume"
  fi
  exit 1
fi
$PYTHON -m osum_echat.infer.results --output "$output" --world_size "$procs"
