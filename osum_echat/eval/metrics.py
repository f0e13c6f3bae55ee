"""Scores for OSUM-EChat outputs: WER / CER (via jiwer) and paralinguistic tag accuracy."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import jiwer

_TAG = re.compile(r"<[^<>]+>")
_CJK = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")
_PUNCT = re.compile(r"[^\w\s']", re.UNICODE)


def normalize(text: str) -> str:
    """Lower-case, drop <tags> and punctuation, split CJK characters, squeeze spaces."""
    text = unicodedata.normalize("NFKC", _TAG.sub(" ", text)).lower()
    text = _CJK.sub(r" \1 ", _PUNCT.sub(" ", text))
    return " ".join(text.split())


@dataclass
class ErrorRate:
    errors: int
    total: int

    @property
    def rate(self) -> float:
        return self.errors / self.total if self.total else 0.0


def word_error_rate(refs: list[str], hyps: list[str]) -> ErrorRate:
    """Corpus WER after `normalize`; CJK characters count as words (so Chinese gives CER)."""
    pairs = [(normalize(r), normalize(h)) for r, h in zip(refs, hyps, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        return ErrorRate(0, 0)
    out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    errors = out.substitutions + out.deletions + out.insertions
    return ErrorRate(errors, sum(len(r.split()) for r, _ in pairs))


def char_error_rate(refs: list[str], hyps: list[str]) -> ErrorRate:
    pairs = [(normalize(r).replace(" ", ""), normalize(h).replace(" ", "")) for r, h in zip(refs, hyps, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        return ErrorRate(0, 0)
    out = jiwer.process_characters([r for r, _ in pairs], [h for _, h in pairs])
    return ErrorRate(out.substitutions + out.deletions + out.insertions, sum(len(r) for r, _ in pairs))


def tags(text: str) -> list[str]:
    """The <TAG>s in a text, in order (emotion, gender, age ... labels of understanding tasks)."""
    return [t.upper() for t in _TAG.findall(text)]


def tag_accuracy(refs: list[str], hyps: list[str]) -> float:
    """Share of utterances whose last tag matches (upstream puts the label tag after the transcript)."""
    scored = [(tags(r)[-1], tags(h)[-1] if tags(h) else None) for r, h in zip(refs, hyps, strict=True) if tags(r)]
    return sum(r == h for r, h in scored) / len(scored) if scored else 0.0
