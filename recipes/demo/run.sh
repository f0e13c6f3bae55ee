#!/usr/bin/env bash
# The three OSUM-EChat training stages at tiny size, on CPU, on offline demo data.
#   bash recipes/demo/run.sh                 (or just: bash train.sh)
#   bash recipes/demo/run.sh --stage 2       (redo stages 2 and 3 only)
# Stages: 0 synthesise the demo data (espeak-ng) | 1 understanding | 2 generation |
#         3 empathy | 4 summary (with stage 1 on held-out speech) | 5 evaluate --suite echat on
#         held-out empathy items, both stage-3 checkpoints side by side ($dir/eval_echat/report.md;
#         judged too when JUDGE_BASE_URL is set: JUDGE_MODEL, key in OPENAI_API_KEY). Each training stage writes $dir/stageN/ with checkpoints,
#         train.yaml, tensorboard/ and final.pt, which the next stage starts from. Stage 3 runs once
#         per think style ($dir/stage3_{tag,language}_think/), as upstream releases them:
#         $dir/tag_think_final.pt and $dir/language_think_final.pt.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

stage=0
stop_stage=5
dir=exp/demo
data_type=shard            # the demo data is written as raw jsonl and as shards
train_engine=torch_ddp     # one CPU process: plain single-process training
nproc_per_node=1
threads=2                  # torch threads per process
max_steps=""               # cap each stage's optimizer steps (a quick smoke run; the targets need the full run)
help_message="usage: bash recipes/demo/run.sh [--stage N] [--stop_stage N] [--dir exp/demo] [--nproc_per_node 1] [--max_steps N]"
. tools/parse_options.sh

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # no spin-waiting beside other jobs (osum_echat/threads.py)
data=$dir/data
conf=recipes/demo/conf
speech_token_num=$(sed -n 's/^speech_token_num: *\(&[a-z_]* *\)\?\([0-9]*\).*/\2/p' $conf/stage2_generation.yaml)

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  if ! command -v espeak-ng >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "$0: installing espeak-ng (Debian package) for the demo speech"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null
    else
      echo "$0: espeak-ng is needed to synthesise the demo speech; install it with" >&2
      echo "    sudo apt-get install -y espeak-ng     (Debian/Ubuntu)" >&2
      exit 1
    fi
  fi
  # demo speech tokens use codes 0 .. speech_token_num-2; speech_token_num-1 marks start/end
  "$PYTHON" recipes/demo/local/prepare_data.py --out_dir "$data" \
    --codebook_size $((speech_token_num - 1)) --data_type "$data_type"
fi

train_stage() {  # name number [checkpoint] [variant: stage folder and data yamls stageN_VARIANT]
  local name=$1 n=$2 init=${3:-} s=$2${4:+_$4}
  "$PYTHON" -m osum_echat.train.data_lists "$data/conf/stage${s}_cv.yaml" "$dir/stage$s/data/cv.list"
  local data_args=()
  for d in s2t t2s s2s t2t; do
    grep -q path "$data/conf/stage${s}_$d.yaml" && data_args+=(--data_$d "$data/conf/stage${s}_$d.yaml")
  done
  SECONDS=0
  bash train.sh --config "$conf/stage${n}_$name.yaml" --dir "$dir/stage$s" --data_type "$data_type" \
    "${data_args[@]}" --cv_data "$dir/stage$s/data/cv.list" --device cpu --use_amp false \
    --train_engine "$train_engine" --nproc_per_node "$nproc_per_node" --num_workers 1 --prefetch 8 \
    ${init:+--checkpoint "$init"} ${max_steps:+--max_steps "$max_steps"} 2>&1 | tee "$dir/stage$s.log"
  echo "$0: stage $s ($name) took ${SECONDS}s" | tee -a "$dir/stage$s.log"
}

mkdir -p "$dir"
if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  train_stage understanding 1
fi
if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  train_stage generation 2 "$dir/stage1/final.pt"
  # a few decoded TTS / spoken-dialogue replies -> wavs through a tiny (random) token2wav directory
  "$PYTHON" recipes/demo/local/render_speech.py --stage_dir "$dir/stage2" --num 2 \
    --lists "$data/lists/s2_tts.jsonl" "$data/lists/s2_s2s.jsonl" --token2wav_dir "$dir/token2wav_tiny" \
    2>&1 | tee "$dir/stage2_render.log" || echo "$0: rendering stage 2's speech: NOT met (see $dir/stage2_render.log)"
fi
if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  # one checkpoint per think style, as upstream releases them (tag_think_final.pt, language_think_final.pt)
  [ -f "$data/conf/stage3_tag_think_s2s.yaml" ] || "$PYTHON" recipes/demo/local/prepare_data.py \
    --out_dir "$data" --data_type "$data_type" --yamls_only
  for style in tag_think language_think; do
    train_stage empathy 3 "$dir/stage2/final.pt" $style
    # a link, so tools find the stage's train.yaml (and its data lists) through it
    ln -sfn "stage3_$style/final.pt" "$dir/${style}_final.pt"
  done
fi
if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  [ -f "$data/lists/heldout_s1.jsonl" ] || "$PYTHON" recipes/demo/local/prepare_data.py --out_dir "$data" \
    --codebook_size $((speech_token_num - 1)) --held_out_only
  "$PYTHON" recipes/demo/local/summary.py "$dir"
fi
if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  # EChat-eval-style evaluation of the two think styles on held-out speech: objective checks of the
  # spoken reply (reply audio through the tiny token2wav, heard by the checkpoint's own ASR and
  # <EMOTION>), think-tag accuracy, and the judge when JUDGE_BASE_URL names an OpenAI-compatible endpoint
  [ -f "$data/lists/heldout_echat.jsonl" ] || "$PYTHON" recipes/demo/local/prepare_data.py --out_dir "$data" \
    --codebook_size $((speech_token_num - 1)) --held_out_only
  SECONDS=0
  "$PYTHON" -m osum_echat.bin.evaluate --suite echat --data "$data/lists/heldout_echat.jsonl" \
    --checkpoint "$dir/stage3_tag_think/final.pt" --checkpoint "$dir/stage3_language_think/final.pt" \
    --token2wav_dir "$dir/token2wav_tiny" --output "$dir/eval_echat" --greedy --max_text_tokens 48 --max_speech_tokens 50 \
    ${JUDGE_BASE_URL:+--judge_base_url "$JUDGE_BASE_URL" --judge_model "${JUDGE_MODEL:-gpt-4o}"} \
    2>"$dir/eval_echat.log" || { cat "$dir/eval_echat.log" >&2; exit 1; }
  echo "$0: stage 5 (evaluate --suite echat) took ${SECONDS}s; report $dir/eval_echat/report.md, chart $dir/eval_echat/echat.png"
fi
