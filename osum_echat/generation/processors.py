"""Logits processors: small pieces the decoder chains per phase.

Each takes the (n, V) float scores of the rows being scored in one phase and a `Rows` view
(their history in that phase's id space: text ids, or speech codes 0..N-1 where N-1 is the span
marker) and returns the processed scores. Sampling warpers follow transformers' definitions
(TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper), so upstream's presets mean the same.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch

from osum_echat.tasks import SPEECH_BLOCK_DEFAULT, SPEECH_BLOCK_PER_CODE

NEG_INF = float("-inf")
SURVIVOR_FRACTION = 8  # TopP sorts only the finite scores when they are under 1/8 of the row


@dataclasses.dataclass
class Rows:
    history: list  # per row: list[int], ids produced so far in this phase's id space
    seen: Optional[torch.Tensor] = None  # (n, V) bool: id occurs in history (kept by the decoder)
    state: Optional[list] = None  # per row: dict for processors that remember something


class RepetitionPenalty:
    """transformers' repetition penalty over the ids already produced: a positive score is
    divided by `penalty`, a negative one multiplied. `exclude` ids are never penalised (the
    speech span marker: penalising it makes the span less likely to close)."""

    def __init__(self, penalty: float, exclude: Sequence[int] = ()):
        self.penalty = penalty
        self.exclude = list(exclude)

    def __call__(self, scores: torch.Tensor, rows: Rows) -> torch.Tensor:
        seen = rows.seen[:, :scores.size(-1)]
        if self.exclude:
            seen = seen.clone()
            seen[:, self.exclude] = False
        penalised = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return torch.where(seen, penalised, scores)


class TagCotConstraint:
    """After `prefix` (the ids of "年龄为:<") only the `allowed` ids (first ids of the age labels) may
    follow, once per row (upstream OSUM_chat_LogitsProcessor, reset per generate call)."""

    def __init__(self, prefix: Sequence[int], allowed: Sequence[int]):
        self.prefix = list(prefix)
        self.allowed = sorted(set(allowed))

    def __call__(self, scores: torch.Tensor, rows: Rows) -> torch.Tensor:
        n = len(self.prefix)
        for i, (hist, state) in enumerate(zip(rows.history, rows.state)):
            if state.get("tag_cot_done") or len(hist) < n or hist[-n:] != self.prefix:
                continue
            keep = torch.full_like(scores[i], NEG_INF)
            keep[self.allowed] = scores[i, self.allowed]
            scores[i] = keep
            state["tag_cot_done"] = True
        return scores


class SpeechRepeatBlocking:
    """Bans a speech code that already ran `run` times in a row at the end of the history, and
    every code seen `count` times within the last `window` codes; `per_code` gives
    (run, window, count) for single codes. Upstream's SpeechOnlyNGramBlockingLogitsProcessor with
    one fix: the span marker (`exclude`) is never banned, so the span can always close."""

    def __init__(self, default=(5, 8, 5), per_code: Optional[dict] = None, exclude: Sequence[int] = ()):
        self.default = tuple(default)
        self.per_code = dict(per_code or {})
        self.exclude = set(exclude)
        self.lookback = max([self.default[1]] + [w for _, w, _ in self.per_code.values()])

    def banned(self, history: list) -> set:
        if not history:
            return set()
        out = set()
        last, run = history[-1], 0
        for code in reversed(history):
            if code != last:
                break
            run += 1
        if run >= self.per_code.get(last, self.default)[0]:
            out.add(last)
        for code in set(history[-self.lookback:]):
            _, window, count = self.per_code.get(code, self.default)
            if history[-window:].count(code) >= count:
                out.add(code)
        return out - self.exclude

    def __call__(self, scores: torch.Tensor, rows: Rows) -> torch.Tensor:
        for i, hist in enumerate(rows.history):
            ban = [c for c in self.banned(hist) if c < scores.size(-1)]
            if ban:
                scores[i, ban] = NEG_INF
        return scores


class Temperature:
    def __init__(self, temperature: float):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (got {temperature}); use --greedy for argmax")
        self.temperature = temperature

    def __call__(self, scores: torch.Tensor, rows: Rows) -> torch.Tensor:
        return scores / self.temperature


class TopK:
    def __init__(self, k: int):
        self.k = k

    def __call__(self, scores: torch.Tensor, rows: Rows) -> torch.Tensor:
        k = min(self.k, scores.size(-1))
        kth = torch.topk(scores, k).values[..., -1:]
        return scores.masked_fill(scores < kth, NEG_INF)


class TopP:
    """Keeps the smallest set of top ids whose probability reaches p (at least one)."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, scores: torch.Tensor, rows: Rows) -> torch.Tensor:
        survivors = int(torch.isfinite(scores).sum(-1).max())
        if survivors * SURVIVOR_FRACTION < scores.size(-1):
            # a TopK before left few ids (k of 151,936 text ids): the removed ones add nothing to the
            # softmax, so sorting the survivors alone gives the same cut (a full sort costs ~10 ms a row)
            values, order = torch.topk(scores, survivors)
            values, order = values.flip(-1), order.flip(-1)  # ascending, as below
            cum = values.softmax(-1).cumsum(-1)
            remove = cum <= (1 - self.p)
            remove[..., -1] = False
            return scores.scatter(-1, order, values.masked_fill(remove, NEG_INF))
        sorted_scores, order = torch.sort(scores, descending=False)
        cum = sorted_scores.softmax(-1).cumsum(-1)
        remove = cum <= (1 - self.p)
        remove[..., -1] = False
        return scores.masked_fill(remove.scatter(-1, order, remove), NEG_INF)


def build_chain(conf, phase: str, *, marker: int, tag_cot: Optional[TagCotConstraint] = None) -> list:
    """The processors of one phase for a DecodeConfig, in transformers' order: penalties and
    constraints first, then the sampling warpers (only when sampling)."""
    chain = []
    if phase == "text":
        if conf.repetition_penalty != 1.0:
            chain.append(RepetitionPenalty(conf.repetition_penalty))
        if conf.tag_cot_constraint and tag_cot is not None:
            chain.append(tag_cot)
    else:
        if conf.speech_repetition_penalty != 1.0:
            chain.append(RepetitionPenalty(conf.speech_repetition_penalty, exclude=[marker]))
        if conf.speech_repeat_blocking:
            chain.append(SpeechRepeatBlocking(SPEECH_BLOCK_DEFAULT, SPEECH_BLOCK_PER_CODE, exclude=[marker]))
    if conf.do_sample:
        if conf.temperature != 1.0:
            chain.append(Temperature(conf.temperature))
        if conf.top_k > 0:
            chain.append(TopK(conf.top_k))
        if conf.top_p < 1.0:
            chain.append(TopP(conf.top_p))
    return chain


def apply_chain(chain: list, scores: torch.Tensor, rows: Rows) -> torch.Tensor:
    for proc in chain:
        scores = proc(scores, rows)
    return scores


def pick(scores: torch.Tensor, do_sample: bool, generators: Optional[list] = None) -> torch.Tensor:
    """Next ids (n,) on the scores' device: argmax, or one draw per row from its own generator
    (so a row's draws do not depend on which other rows share the batch)."""
    if not do_sample:
        return scores.argmax(-1)
    probs = scores.softmax(-1)
    return torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)])
