"""Per-item scores of one checkpoint on one suite, and their summary (mean, 95% bootstrap CI).

Every score is a number or None. None means the item was meant to be scored and could not be (a
judge answer without a score in the rubric's format, a multiple-choice reply naming no option):
it is counted as `invalid`, never as 0 and never dropped. A metric that does not apply to an item
(no reply audio, no think chain) is simply absent from that item.

Metric kinds (the report's sections):
  judge      rubric scores, one row per suite metric (dimension, or dimension/score name)
  exact      exactly scored items (multiple choice): 1 right, 0 wrong
  think      the think chain against the query's labels, per slot: 1 right, 0 wrong; a chain of
             tags by its tags, a natural-language chain by the words naming a label (LABEL_WORDS)
  objective  of the spoken reply, no judge: reply_wer (reply text vs the scorer's transcript of the
             reply audio), reply_seconds, speech_seconds_per_char (speech tokens / 25 Hz over the
             reply text's characters), reply_emotion_named (the scorer's <EMOTION> answer on the
             reply audio holds a tag), reply_emotion_match (the emotion heard in the reply audio
             equals the reply emotion the item expects, when it says one)
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from osum_echat import tasks as task_table

from .metrics import pick_class
from .normalize import strip_tags, tags_of, tokens
from .report import SPEECH_TOKENS_PER_SECOND
from .rubric import load_rubric
from .suites import Reply
from .suites.echat import as_tag

# words that name a label in a natural-language think chain ("the speaker is a man who sounds happy");
# a label not listed is named by its own name in lower case (<HAPPY> -> "happy")
LABEL_WORDS = {"<MALE>": ("male", "man", "boy"), "<FEMALE>": ("female", "woman", "girl"),
               "<ADULT>": ("adult", "man", "woman"), "<CHILD>": ("child", "kid", "boy", "girl"),
               "<OLD>": ("old", "elderly"), "<AD>": ("adult", "man", "woman")}
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def judge_requests(suite, items: list, replies: dict) -> list:
    """(request id, item id, messages) for every rubric of every decoded item."""
    out = []
    for item in items:
        reply = replies.get(item.key)
        if reply is None:
            continue
        for name in item.rubrics:
            out.append(((item.key, name), item.key, load_rubric(name).messages(suite.judge_fields(item, reply))))
    return out


def _wer(ref: str, hyp: str):
    import jiwer

    ref_t, hyp_t = tokens(ref), tokens(hyp)
    if not ref_t:
        return None
    m = jiwer.process_words(" ".join(ref_t), " ".join(hyp_t) or "<empty>")
    return (m.substitutions + m.deletions + m.insertions) / len(ref_t)


def score_items(suite, items: list, replies: dict, records: dict, answers: dict) -> list:
    """One row per item: {key, dimension, decoded, scores: {kind: {metric: value or None}}}."""
    classes = defaultdict(set)  # slot -> label classes the items use
    for item in items:
        for slot, label in item.labels.items():
            classes[slot].add(label)
    rows = []
    for item in items:
        reply, record = replies.get(item.key), records.get(item.key) or {}
        scores = {"judge": {}, "exact": {}, "think": {}, "objective": {}}
        row = {"key": item.key, "dimension": item.dimension, "decoded": reply is not None, "scores": scores}
        rows.append(row)
        if reply is None:
            continue
        for name in item.rubrics:
            if (item.key, name) not in answers:  # not judged (no judge given)
                continue
            rubric = load_rubric(name)  # an answer of None (refused by the endpoint) parses as invalid
            for dim, value in rubric.parse(answers[(item.key, name)]).items():
                scores["judge"][suite.metric(item, dim, len(rubric.dimensions))] = value
        scores["exact"].update(suite.exact_scores(item, reply))
        if item.labels and _thinks(item.task):  # an empty chain is scored too: it names no label
            hyp, used = tags_of(reply.think), set()
            for slot, label in item.labels.items():
                said = pick_class(hyp, classes[slot], used) if hyp else named_in_words(reply.think, classes[slot])
                scores["think"][f"think_{slot}"] = float(said == label)
        scores["objective"].update(_objective(item, reply, record))
    return rows


def named_in_words(text: str, classes: set) -> str | None:
    """The class a natural-language chain names first (LABEL_WORDS), None when it names none."""
    words = tokens(text, cjk=False)
    first = {}
    for cls in classes:
        hits = [words.index(w) for w in LABEL_WORDS.get(cls, (cls.strip("<>").lower(),)) if w in words]
        if hits:
            first[cls] = min(hits)
    return min(first, key=lambda c: (first[c], c)) if first else None


def _thinks(tag: str) -> bool:
    spec = task_table.get_task(tag)
    return bool(spec and spec.think)


def _objective(item, reply: Reply, record: dict) -> dict:
    out = {}
    text = strip_tags(reply.text).strip()
    speech = record.get("speech_tokens") or []
    if speech and text:
        out["speech_seconds_per_char"] = len(speech) / SPEECH_TOKENS_PER_SECOND / len(text)
    if record.get("wav_seconds") is not None:
        out["reply_seconds"] = float(record["wav_seconds"])
    if reply.reply_asr is not None and text:
        out["reply_wer"] = _wer(text, reply.reply_asr)
    if reply.wav:  # did the scorer name an emotion for the reply audio at all
        out["reply_emotion_named"] = float(reply.reply_emotion is not None)
    expected = item.fields.get("expected_reply_emotion")
    if expected and reply.reply_emotion is not None:
        out["reply_emotion_match"] = float(tags_of(reply.reply_emotion)[:1] == [as_tag(expected)])
    return out


def bootstrap_ci(values: list, seed: int = BOOTSTRAP_SEED, resamples: int = BOOTSTRAP_RESAMPLES):
    """95% percentile bootstrap interval of the mean; None with fewer than two values."""
    if len(values) < 2:
        return None
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def summarize(rows: list) -> dict:
    """{kind: {metric: {mean, ci95, count, invalid}}} over the items' scores."""
    values = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for kind, metrics in row["scores"].items():
            for name, v in metrics.items():
                values[kind][name].append(v)
    out = {}
    for kind in ("judge", "exact", "think", "objective"):
        out[kind] = {}
        for name in sorted(values.get(kind, {})):
            vs = values[kind][name]
            valid = [v for v in vs if v is not None]
            out[kind][name] = {"mean": round(float(np.mean(valid)), 4) if valid else None,
                               "ci95": bootstrap_ci(valid), "count": len(valid), "invalid": len(vs) - len(valid)}
    return out
