"""Evaluation suites: one module per benchmark, each reading its published format as is.

A suite turns its data file into `Item`s (what to decode, what the judge needs), says which rubric
judges each item (osum_echat/eval/rubrics/) and may score some items exactly (multiple choice).
Everything generic (decoding, objective checks, the judge, the report) lives in
osum_echat/eval/run.py and reads a suite only through this interface; a new suite is one module
that calls `register`.

Reading never touches the network; a missing file or field is a `SuiteFormatError` whose message
is one line naming the file, the item and the field.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from osum_echat import tasks as task_table

# the spoken-reply task a suite decodes with unless an item says otherwise (task table row)
SPOKEN_REPLY_TASK = "<S2TCHAT> <TEXT2TOKEN> <THINK>"
assert SPOKEN_REPLY_TASK in task_table.TASKS


class SuiteFormatError(ValueError):
    pass


@dataclass
class Item:
    key: str
    wav: str | None  # the query audio (absolute path), None when the suite's data gives it in a shard
    task: str  # task table tag to decode with
    statement: str = ""  # what the user said (transcript)
    dimension: str = ""  # the report group (paralinguistic dimension, subset, voice type, MCQ kind)
    labels: dict = field(default_factory=dict)  # paralinguistic slot -> label, e.g. {"emotion": "<SAD>"}
    prompt: str | None = None  # user prompt for prompted tasks (multiple choice)
    answer: str | None = None  # right option letter (multiple choice)
    rubrics: tuple = ()  # rubric names judging this item's reply
    fields: dict = field(default_factory=dict)  # extra rubric fields (info, topic, category ...)


@dataclass
class Reply:
    """What the checkpoint answered and what the objective checks heard in its audio."""
    text: str
    think: str = ""
    wav: str | None = None
    reply_emotion: str | None = None  # <EMOTION> of the reply audio
    reply_asr: str | None = None  # transcript of the reply audio


class Suite:
    name = ""
    description = ""

    def read(self, path: str, audio_root: str | None) -> list:
        raise NotImplementedError

    def judge_fields(self, item: Item, reply: Reply) -> dict:
        """The fields a rubric may name."""
        labels = ", ".join(f"{k}: {v}" for k, v in item.labels.items()) or "none"
        no_audio = "unknown (no reply audio)"
        emotion = reply.reply_emotion or ("not recognised in the reply audio" if reply.wav else no_audio)
        return {"statement": item.statement, "response": reply.text, "dimension": item.dimension,
                "labels": labels, "reply_emotion": emotion,
                "reply_asr": reply.reply_asr if reply.reply_asr is not None else no_audio, **item.fields}

    def metric(self, item: Item, dim: str, n_dims: int) -> str:
        """Report row of one rubric score: the item's dimension, plus the score's name when a rubric gives several."""
        return item.dimension if n_dims == 1 else f"{item.dimension}/{dim}"

    def exact_scores(self, item: Item, reply: Reply) -> dict:
        """{metric: 1.0 / 0.0, or None when the answer cannot be read} for exactly scored items."""
        return {}

    def derived_metrics(self, metrics: dict) -> dict:
        """{kind: {metric: {mean, ci95, count, invalid}}} the benchmark computes from the per-metric summary
        (a weighted overall score), added to the report beside it."""
        return {}


SUITES: dict = {}


def register(suite: Suite) -> Suite:
    SUITES[suite.name] = suite
    return suite


def get_suite(name: str) -> Suite:
    _load_all()
    if name not in SUITES:
        raise SuiteFormatError(f"unknown suite {name!r}; known: {', '.join(sorted(SUITES))}")
    return SUITES[name]


def _load_all() -> None:
    from . import echat, echomind, sd_eval, vstyle  # noqa: F401 - each registers itself


# ------------------------------------------------------------------ helpers for suite modules

def load_json(path: str, what: str):
    if not os.path.isfile(path):
        raise SuiteFormatError(f"{what}: file {path} not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SuiteFormatError(f"{what}: {path} is not valid JSON ({e})") from None


def load_jsonl(path: str, what: str) -> list:
    if not os.path.isfile(path):
        raise SuiteFormatError(f"{what}: file {path} not found")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise SuiteFormatError(f"{what}: {path}:{n} is not valid JSON ({e})") from None
    return rows


def need(row: dict, name: str, where: str):
    if not isinstance(row, dict) or name not in row:
        raise SuiteFormatError(f"{where}: no field {name!r}")
    return row[name]


def audio_path(path: str, audio_root: str | None, data_file: str) -> str:
    """A wav named in a suite file: absolute as is, else under --audio_root (default: the file's folder)."""
    if os.path.isabs(path):
        return path
    return os.path.abspath(os.path.join(audio_root or os.path.dirname(os.path.abspath(data_file)), path))
