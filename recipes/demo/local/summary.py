"""Print what each demo stage learned: cv loss/accuracy before training and at the end.

Stage 1's cv list is the ASR targets of its own training speech, so its accuracy is the
teacher-forced next-token accuracy the demo promises to lift above 90%. Teacher forcing
alone can be met by a model that memorised the sentences as a language model, so stage 1's
final.pt also decodes that list greedily with the real decoder (osum_echat.infer.batch.run):
its WER must be below 20%, and the share of first words right shows the transcript comes
from the audio (the demo sentences all start differently, so only the audio tells the first
word). Exits 1 if a stage is missing or a target (or "stage 2/3 loss at most half its
start") is not met.
"""
import json
import os
import shutil
import sys

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from osum_echat.train.checkpointing import latest_checkpoint  # noqa: E402

STAGES = {"1": "understanding", "2": "generation", "3_tag_think": "empathy, tag think",
          "3_language_think": "empathy, language think"}
ASR_ACC_TARGET = 0.90
ASR_WER_TARGET = 0.20
LOSS_RATIO_TARGET = 0.5
HELD_OUT_DECODE = {"batch_size": 9}  # 18 utterances in two batches; otherwise decoded as the training-speech figures


_LOADED = {}  # stage dir -> (model, tokenizer, config): the held-out decoding reuses the cv one's model


def _load(stage_dir):
    if stage_dir not in _LOADED:
        from osum_echat.config import load_config
        from osum_echat.models import build_model
        from osum_echat.models.checkpoint import load_checkpoint
        from osum_echat.tokenizer import load_tokenizer

        config = load_config(os.path.join(stage_dir, "train.yaml"))
        tokenizer = load_tokenizer(config["llm_path"])
        model = build_model(config, device="cpu", tokenizer=tokenizer)
        load_checkpoint(model, os.path.join(stage_dir, "final.pt"), strict=True)
        _LOADED[stage_dir] = (model, tokenizer, config)
    return _LOADED[stage_dir]


def greedy_asr(stage_dir, data_list=None, name="greedy_asr", data_type=None, decode_options=None):
    """Greedy-decode stage 1's cv list (its ASR training speech), or `data_list`, with its final.pt."""
    import torch

    from osum_echat.infer.batch import run

    model, tokenizer, config = _load(stage_dir)
    output = os.path.join(stage_dir, name, "text")
    shutil.rmtree(os.path.dirname(output), ignore_errors=True)  # a rerun would resume an older model's results
    with torch.no_grad():
        summary = run(model.eval(), tokenizer, config, data_type or config["train_conf"]["data_type"],
                      data_list or os.path.join(stage_dir, "data", "cv.list"), output, decode_options=decode_options)
    with open(output + ".jsonl", encoding="utf8") as f:
        records = [json.loads(line) for line in f]
    return summary, records, output


def report_greedy_asr(stage_dir):
    if not os.path.exists(os.path.join(stage_dir, "final.pt")):
        print(f"  ASR greedy decoding: no final.pt in {stage_dir} (training did not finish): NOT met")
        return False
    summary, records, output = greedy_asr(stage_dir)
    wer = ((summary["metrics"].get("transcription") or {}).get("wer") or {}).get("wer")
    if wer is None:
        print(f"  ASR greedy decoding: nothing scored ({summary['listed']} listed, failed {summary['failed']}): NOT met")
        return False
    first_word = sum(r["text"].split()[:1] == r["reference"].split()[:1] for r in records) / len(records)
    exact = sum(r["text"].strip() == r["reference"].strip() for r in records)
    met = wer < ASR_WER_TARGET
    print(f"  ASR greedy decoding of the same {len(records)} utterances: first word right "
          f"{first_word:.3f}, exact {exact}/{len(records)}, WER {wer:.3f} "
          f"(target < {ASR_WER_TARGET}): {'met' if met else 'NOT met'}   ({output})")
    report_held_out(stage_dir, wer)
    return met


def report_held_out(stage_dir, train_wer):
    """Stage 1 on utterances it never saw (new sentences; a new speaker and a trained one), next to
    the training figures: WER and the gender / age tag accuracy. Reported, no target."""
    held_out = os.path.join(stage_dir, "..", "data", "lists", "heldout_s1.jsonl")
    if not os.path.exists(held_out):
        print(f"  held-out: no {os.path.normpath(held_out)} (run stage 0, or prepare_data.py --held_out_only)")
        return
    summary, records, output = greedy_asr(stage_dir, held_out, "held_out", "raw", HELD_OUT_DECODE)
    m = summary["metrics"]
    wer = ((m.get("transcription") or {}).get("wer") or {}).get("wer")
    tags = "  ".join(f"{slot} accuracy {s['accuracy']:.3f} (n={s['count']})" if s["accuracy"] is not None
                     else f"{slot} n/a" for slot, s in (m.get("paralinguistic") or {}).items())
    fmt = (lambda x: "n/a" if x is None else f"{x:.3f}")
    print(f"  held-out ({summary['decoded']} utterances: new sentences, new speaker + a trained one): "
          f"WER {fmt(wer)} (training speech {fmt(train_wer)})  {tags}   ({output})")


def main(exp_dir):
    ok = True
    for n, name in STAGES.items():
        stage_dir = os.path.join(exp_dir, f"stage{n}")
        start_path = os.path.join(stage_dir, "cv_start.yaml")
        last = latest_checkpoint(stage_dir) if os.path.isdir(stage_dir) else None
        if last is None or not os.path.exists(start_path):
            print(f"stage {n} ({name}): no finished run in {stage_dir}")
            ok = False
            continue
        with open(start_path) as f:
            start = yaml.safe_load(f)["loss_dict"]
        end = last["info"]["loss_dict"]
        print(f"stage {n} ({name}), {last['info']['step']} steps, cv before -> after:")
        for key in sorted(k for k in end if k.startswith("loss/")):
            kind = key.split("/", 1)[1]
            print(f"  {kind:28s} loss {start.get(key, float('nan')):7.3f} -> {end[key]:7.3f}   "
                  f"acc {start.get('acc/' + kind, float('nan')):.3f} -> {end['acc/' + kind]:.3f}")
        if n == "1":
            acc = end.get("acc", 0.0)
            met = acc > ASR_ACC_TARGET
            print(f"  ASR teacher-forced accuracy {acc:.3f} (target > {ASR_ACC_TARGET}): "
                  f"{'met' if met else 'NOT met'}")
            met &= report_greedy_asr(stage_dir)
        else:
            ratio = end["loss"] / start["loss"]
            met = ratio <= LOSS_RATIO_TARGET
            print(f"  loss ratio after/before {ratio:.3f} (target <= {LOSS_RATIO_TARGET}): "
                  f"{'met' if met else 'NOT met'}")
        ok &= met
        print(f"  model for the next stage / inference: {os.path.join(stage_dir, 'final.pt')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "exp/demo"))
