#!/usr/bin/env bash
# Batch inference over a raw / shard / combine list, split across processes, results merged in order.
#
#   bash infer_with_shards_or_raw.sh --checkpoint exp/demo/stage1/final.pt \
#        --data exp/demo/data/stage1_train.list --data_type raw --output exp/demo/infer/text
#
# Writes OUTPUT (key<TAB>text), OUTPUT.jsonl (text, think, speech tokens) and OUTPUT.wer (scores
# against the list's reference texts). One process per GPU/NPU found (or --nj CPU processes).
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

config=conf/tiny_ct_config.yaml
checkpoint=""
data=""
data_type=raw          # raw | shard | combine
root=""                # folder that relative wav paths in a raw list are read against
output=""
device=""              # cuda | npu | cpu; empty = detect
nj=""                  # processes; empty = one per GPU/NPU, or 1 on CPU
extra=""               # more options for osum_echat.bin.infer, e.g. "--do_sample --top_k 10"
help_message="usage: bash infer_with_shards_or_raw.sh --checkpoint CKPT --data LIST --output OUT [--config YAML] [--data_type raw|shard|combine] [--root DIR] [--device D] [--nj N] [--extra '...']"
. tools/parse_options.sh

for v in checkpoint data output; do
  [ -n "${!v}" ] || { echo "error: --$v is required"; echo "$help_message"; exit 2; }
done
[ -f "$data" ] || { echo "error: data list '$data' not found"; exit 2; }
[ -f "$checkpoint" ] || { echo "error: checkpoint '$checkpoint' not found"; exit 2; }

accelerators=0
if [ -z "$device" ] || [ "$device" = cuda ]; then
  command -v nvidia-smi >/dev/null 2>&1 && accelerators=$(nvidia-smi -L 2>/dev/null | grep -c GPU || true)
  [ "$accelerators" -gt 0 ] && device=${device:-cuda}
fi
if { [ -z "$device" ] || [ "$device" = npu ]; } && [ "$accelerators" -eq 0 ]; then
  command -v npu-smi >/dev/null 2>&1 && accelerators=$(npu-smi info -l 2>/dev/null | grep -c "NPU ID" || true)
  [ "$accelerators" -gt 0 ] && device=${device:-npu}
fi
device=${device:-cpu}
[ -n "$nj" ] || nj=$(( accelerators > 0 ? accelerators : 1 ))

split_dir=$(dirname "$output")/split$nj
mkdir -p "$split_dir"
# A combine list is read whole by every process (its entries are list files); others are split by line.
if [ "$data_type" = combine ] || [ "$nj" -eq 1 ]; then
  nj=1; cp "$data" "$split_dir/data.0"
else
  total=$(wc -l < "$data"); per=$(( (total + nj - 1) / nj ))
  for ((i = 0; i < nj; i++)); do sed -n "$((i * per + 1)),$(((i + 1) * per))p" "$data" > "$split_dir/data.$i"; done
fi

root_opt=(); [ -n "$root" ] && root_opt=(--root "$root")
[ -n "$root" ] || [ "$data_type" != raw ] || root_opt=(--root "$(dirname "$data")")
pids=()
for ((i = 0; i < nj; i++)); do
  dev=$device; [ "$device" != cpu ] && dev="$device:$i"
  $PYTHON -m osum_echat.bin.infer --config "$config" --checkpoint "$checkpoint" --data_type "$data_type" \
    --data "$split_dir/data.$i" "${root_opt[@]}" --output "$split_dir/text.$i" --device "$dev" $extra \
    > "$split_dir/log.$i" 2>&1 &
  pids+=($!)
done
failed=0
for ((i = 0; i < nj; i++)); do
  wait "${pids[$i]}" || { echo "error: process $i failed, see $split_dir/log.$i"; tail -3 "$split_dir/log.$i"; failed=1; }
done
[ $failed -eq 0 ] || exit 1
: > "$output"; : > "$output.jsonl"
for ((i = 0; i < nj; i++)); do
  cat "$split_dir/text.$i" >> "$output"; cat "$split_dir/text.$i.jsonl" >> "$output.jsonl"
done
$PYTHON -m osum_echat.eval.report "$output.jsonl" | tee "$output.wer"
echo "done: $output"
