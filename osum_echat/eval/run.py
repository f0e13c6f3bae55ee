"""One evaluation: decode a suite once per checkpoint, check the spoken replies, judge, report.

Layout under --output DIR:
  DIR/<label>/decode/reply{,.jsonl,.failed,.report.*}   batch inference of the suite (resumable)
  DIR/<label>/decode/reply_wavs/KEY.wav                 reply audio (with --token2wav_dir)
  DIR/<label>/scorer/reply_audio*                       <TRANSCRIBE> and <EMOTION> of each reply wav
  DIR/<label>/scores.jsonl                              every item's scores
  DIR/judge_cache.jsonl                                 judge answers keyed by (model, prompt, item)
  DIR/report.json, DIR/report.md, DIR/<suite>.png
Decoding and the reply-audio checks are batch inference runs (osum_echat/infer/batch.py): a rerun
decodes only what is missing, and `rescore` decodes nothing (it needs the decoded outputs).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from osum_echat.infer.results import read_records
from osum_echat.utils import get_logger

from . import judged_report, scoring
from .judge import Judge, JudgeConfig, JudgeUnavailable
from .normalize import tags_of
from .report import read_failed
from .suites import Reply, get_suite

log = get_logger("osum_echat.eval")

REPLY_ASR_TASK = "<TRANSCRIBE>"
REPLY_EMOTION_TASK = "<EMOTION>"
# a reply is short: the scorer's transcript of it is capped (the ASR preset allows 8000 ids) unless
# --max_text_tokens says otherwise
SCORER_MAX_TEXT_TOKENS = 256


class EvalError(RuntimeError):
    """A mistake the user fixes (one line)."""


def say(text: str) -> None:
    print(f"evaluate: {text}", file=sys.stderr, flush=True)


@dataclass
class Setup:
    suite: str
    data: str
    checkpoints: list
    output: str
    config: str | None = None
    audio_root: str | None = None
    token2wav_dir: str | None = None
    scorer_checkpoint: str | None = None
    judge: JudgeConfig | None = None
    rescore: bool = False
    device: str | None = None
    overrides: list = field(default_factory=list)
    decode_options: dict = field(default_factory=dict)


class ModelBundle:
    """(model, tokenizer, config) of one checkpoint: the config is read (and any mistake in it
    reported) at once, the model only on first use."""

    def __init__(self, checkpoint: str, config: str | None, setup: Setup):
        from osum_echat.bin.infer import anchor_paths
        from osum_echat.config import ConfigError, load_config

        self.checkpoint, self.setup = checkpoint, setup
        self.config_path = config_for(config, checkpoint)
        try:
            self.config = load_config(self.config_path, list(setup.overrides))
        except ConfigError as e:
            raise EvalError(str(e)) from None
        anchor_paths(self.config, Path(self.config_path).resolve().parent)
        self._loaded = None

    def get(self):
        if self._loaded is None:
            import torch

            from osum_echat.config import ConfigError
            from osum_echat.models import load_for_inference
            from osum_echat.models.checkpoint import CheckpointError
            from osum_echat.tokenizer import load_tokenizer
            from osum_echat.train.devices import select_device

            say(f"loading {self.checkpoint} (config {self.config_path})")
            try:
                tokenizer = load_tokenizer(self.config["llm_path"])
                model = load_for_inference(self.config, self.checkpoint, select_device(self.setup.device),
                                           torch.float32, tokenizer)
            except ConfigError as e:
                raise EvalError(str(e)) from None
            except CheckpointError as e:
                first = str(e).splitlines()[1] if "\n" in str(e) else str(e)
                raise EvalError(f"checkpoint {self.checkpoint} does not fit config {self.config_path} ({first}); "
                                f"give the config it was trained with") from None
            except (OSError, RuntimeError, ValueError, KeyError) as e:
                raise EvalError(f"checkpoint {self.checkpoint} cannot be read as model weights "
                                f"({type(e).__name__}: {str(e)[:200]})") from None
            self._loaded = (model, tokenizer, self.config)
        return self._loaded


def config_for(config: str | None, checkpoint: str) -> str:
    from osum_echat.config import ConfigError, resolve_config

    if not os.path.isfile(checkpoint):
        raise EvalError(f"checkpoint {checkpoint} not found")
    try:
        return resolve_config(config, checkpoint)
    except ConfigError as e:
        raise EvalError(str(e)) from None


def scorer_config(setup: Setup) -> str | None:
    """The scorer's own train.yaml when it has one, else --config."""
    from osum_echat.config import saved_config

    saved = saved_config(setup.scorer_checkpoint) if os.path.isfile(setup.scorer_checkpoint) else None
    return str(saved) if saved else setup.config


def labels_for(checkpoints: list) -> list:
    stems = [Path(c).stem for c in checkpoints]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{Path(c).parent.name}_{Path(c).stem}" for c in checkpoints]


def _batch(bundle: ModelBundle, data_type: str, data_list: str, output: str, decode_options: dict, token2wav=None):
    from osum_echat.infer.batch import run

    model, tokenizer, config = bundle.get()
    return run(model, tokenizer, config, data_type, data_list, output, decode_options=decode_options,
               token2wav=token2wav)


def write_list(rows: list, path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if not os.path.exists(path) or Path(path).read_text(encoding="utf-8") != text:
        Path(path).write_text(text, encoding="utf-8")
    return path


def decode(suite, items: list, setup: Setup, bundle: ModelBundle, out: str, token2wav) -> tuple:
    """({key: record}, {reason: count}) of the suite decoded by one checkpoint."""
    output = os.path.join(out, "decode", "reply")
    if hasattr(suite, "decode_list"):
        data_type, data_list = suite.decode_list(setup.data)
    else:
        rows = [{"key": it.key, "wav": it.wav, "txt": "", "task": it.task,
                 "extra": {"question": it.prompt} if it.prompt else {}} for it in items]
        data_type, data_list = "raw", write_list(rows, os.path.join(out, "decode", "list.jsonl"))
    if setup.rescore:
        if not os.path.exists(output + ".jsonl"):
            raise EvalError(f"--rescore: no decoded outputs in {output}.jsonl; run once without --rescore")
    else:
        say(f"decoding {len(items)} items with {bundle.checkpoint} -> {output}.jsonl")
        _batch(bundle, data_type, data_list, output, setup.decode_options, token2wav)
    return {r["key"]: r for r in read_records(output + ".jsonl")}, read_failed(output + ".failed")


def reply_audio_checks(records: dict, scorer: ModelBundle, out: str, decode_options: dict) -> dict:
    """{key: (transcript, emotion)} of each reply wav, by the scorer's <TRANSCRIBE> and <EMOTION>."""
    rows = []
    for key, r in records.items():
        if r.get("wav"):
            rows += [{"key": f"{key}#asr", "wav": os.path.abspath(r["wav"]), "txt": "", "task": REPLY_ASR_TASK},
                     {"key": f"{key}#emotion", "wav": os.path.abspath(r["wav"]), "txt": "", "task": REPLY_EMOTION_TASK}]
    if not rows:
        return {}
    output = os.path.join(out, "scorer", "reply_audio")
    data_list = write_list(rows, os.path.join(out, "scorer", "list.jsonl"))
    done = {r["key"] for r in read_records(output + ".jsonl")}
    if any(r["key"] not in done for r in rows):
        say(f"reply audio: {REPLY_ASR_TASK} and {REPLY_EMOTION_TASK} of {len(rows) // 2} wavs with {scorer.checkpoint}")
        cap = (decode_options.get("overrides") or {}).get("max_text_tokens", SCORER_MAX_TEXT_TOKENS)
        _batch(scorer, "raw", data_list, output, {"greedy": True, "overrides": {"max_text_tokens": cap}})
    heard = {r["key"]: r["text"] for r in read_records(output + ".jsonl")}
    out_map = {}
    for key in records:
        if f"{key}#asr" in heard or f"{key}#emotion" in heard:
            emotion = tags_of(heard.get(f"{key}#emotion", ""))
            out_map[key] = (heard.get(f"{key}#asr"), emotion[0] if emotion else None)
    return out_map


def _token2wav(setup: Setup):
    if not setup.token2wav_dir or setup.rescore:
        return None
    from osum_echat.token2wav import Token2Wav
    from osum_echat.token2wav.token2wav import ModelDirError
    from osum_echat.train.devices import select_device

    try:
        return Token2Wav.from_dir(setup.token2wav_dir, device=select_device(setup.device))
    except (ModelDirError, OSError, ValueError) as e:
        raise EvalError(f"--token2wav_dir {setup.token2wav_dir}: {e}") from None


def evaluate(setup: Setup) -> dict:
    suite = get_suite(setup.suite)
    items = suite.read(setup.data, setup.audio_root)
    say(f"suite {suite.name}: {len(items)} items from {setup.data}")
    labels = labels_for(setup.checkpoints)
    bundles = [ModelBundle(c, setup.config, setup) for c in setup.checkpoints]  # config errors first
    scorer = ModelBundle(setup.scorer_checkpoint, scorer_config(setup), setup) if setup.scorer_checkpoint else None
    t2w = _token2wav(setup)
    per_ckpt = {}
    for label, bundle in zip(labels, bundles):
        out = os.path.join(setup.output, label)
        records, failed = decode(suite, items, setup, bundle, out, t2w)
        heard = reply_audio_checks(records, scorer or bundle, out, setup.decode_options)
        replies = {k: Reply(text=r["text"], think=r.get("think") or "", wav=r.get("wav"),
                            reply_asr=heard.get(k, (None, None))[0], reply_emotion=heard.get(k, (None, None))[1])
                   for k, r in records.items()}
        per_ckpt[label] = (bundle, out, records, failed, replies)
    answers, judge = {}, None
    if setup.judge is not None:
        judge = Judge(setup.judge, os.path.join(setup.output, "judge_cache.jsonl"))
        requests = [((label, *rid), f"{label}/{item}", messages)
                    for label, (_, _, _, _, replies) in per_ckpt.items()
                    for rid, item, messages in scoring.judge_requests(suite, items, replies)]
        say(f"judge {setup.judge.model} at {setup.judge.base_url}: {len(requests)} requests")
        try:
            answers = judge.ask_all(requests)
        except JudgeUnavailable as e:
            raise EvalError(f"{e}; decoded outputs are kept under {setup.output}/<checkpoint>/decode: "
                            f"rerun with --rescore when the judge is reachable") from None
    report = {"suite": suite.name, "data": setup.data, "items": len(items),
              "judge": None if judge is None else {
                  "model": setup.judge.model, "base_url": setup.judge.base_url,
                  "temperature": setup.judge.temperature, "seed": setup.judge.seed, "stats": judge.stats.as_dict()},
              "scorer": setup.scorer_checkpoint or "each checkpoint's own <TRANSCRIBE> and <EMOTION>",
              "checkpoints": {}}
    for label, (bundle, out, records, failed, replies) in per_ckpt.items():
        mine = {rid[1:]: a for rid, a in answers.items() if rid[0] == label}
        rows = scoring.score_items(suite, items, replies, records, mine)
        write_list(rows, os.path.join(out, "scores.jsonl"))
        metrics = scoring.summarize(rows)
        for kind, extra in suite.derived_metrics(metrics).items():
            metrics.setdefault(kind, {}).update(extra)
        report["checkpoints"][label] = {
            "checkpoint": bundle.checkpoint, "decoded": sum(r["decoded"] for r in rows),
            "not_decoded": sum(not r["decoded"] for r in rows), "failed": failed,
            "metrics": metrics}
    paths = judged_report.write(report, setup.output)
    say(f"report: {paths['md']}, {paths['json']}" + (f", chart {paths['chart']}" if paths["chart"] else ""))
    return report
