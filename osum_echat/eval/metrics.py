"""Metrics: token error rates (jiwer) and per-slot classification scores.

Nothing to score gives `None` (the report prints "n/a"), never 0.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import jiwer

from .normalize import is_cjk, tokens

NONE_CLASS = "<NONE>"  # a hypothesis that names no class of the slot


@dataclass
class ErrorRate:
    """Corpus error rate: (substitutions + deletions + insertions) / reference tokens."""
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    ref_tokens: int = 0
    count: int = 0  # utterances scored

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float | None:
        return self.errors / self.ref_tokens if self.ref_tokens else None

    def as_dict(self, name: str) -> dict:
        return {name: _round(self.rate), "count": self.count, "errors": self.errors,
                "substitutions": self.substitutions, "deletions": self.deletions,
                "insertions": self.insertions, "ref_tokens": self.ref_tokens}


def error_rate(refs: list[str], hyps: list[str], cjk: bool | None = None) -> ErrorRate:
    """Error rate over utterance pairs after eval/normalize.py (CJK: characters; else words).
    A pair whose reference normalises to nothing is not scored (it has no tokens to err on)."""
    out = ErrorRate()
    pairs = []
    for r, h in zip(refs, hyps, strict=True):
        unit = is_cjk(r) if cjk is None else cjk  # the reference decides, the hypothesis follows
        ref = tokens(r, unit)
        if ref:
            pairs.append((" ".join(ref), " ".join(tokens(h, unit))))
    if not pairs:
        return out
    m = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    out.substitutions, out.deletions, out.insertions = m.substitutions, m.deletions, m.insertions
    out.ref_tokens = sum(len(r.split()) for r, _ in pairs)
    out.count = len(pairs)
    return out


@dataclass
class SlotScore:
    """One paralinguistic slot (emotion, gender ...): accuracy, recall per class, confusion table."""
    confusion: dict = field(default_factory=dict)  # reference class -> {predicted class: count}

    def add(self, ref: str, hyp: str) -> None:
        row = self.confusion.setdefault(ref, Counter())
        row[hyp] += 1

    @property
    def count(self) -> int:
        return sum(sum(row.values()) for row in self.confusion.values())

    @property
    def accuracy(self) -> float | None:
        n = self.count
        return sum(row[ref] for ref, row in self.confusion.items()) / n if n else None

    def recall(self) -> dict:
        return {ref: _round(row[ref] / sum(row.values())) for ref, row in sorted(self.confusion.items())}

    def as_dict(self) -> dict:
        return {"accuracy": _round(self.accuracy), "count": self.count, "recall": self.recall(),
                "confusion": {ref: dict(sorted(row.items())) for ref, row in sorted(self.confusion.items())}}


def pick_class(hyp_tags: list[str], classes: set, used: set) -> str:
    """The first tag of the hypothesis that is a known class of the slot and not taken by another slot."""
    for i, tag in enumerate(hyp_tags):
        if tag in classes and i not in used:
            used.add(i)
            return tag
    return NONE_CLASS


def summary_stats(values: list[float]) -> dict:
    """mean / min / max of a list, None for each when it is empty."""
    if not values:
        return {"mean": None, "min": None, "max": None}
    return {"mean": _round(sum(values) / len(values)), "min": _round(min(values)), "max": _round(max(values))}


def _round(x):
    return None if x is None else round(float(x), 4)
