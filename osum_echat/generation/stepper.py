"""The decode step: rows that share one KV cache, scored, extended by one id each, fed back.

    batch = DecodeBatch.prefill(model, rows, [prompt embeds (L_i, D) of each row])
    while batch.rows:
        for row, phase, token in batch.step(): ...

This is the one decode loop of the project: the offline `Decoder` (decode.py) runs a chunk of
prompts through it from start to end, the continuous-batching `Scheduler` (scheduler.py) keeps one
running batch and lets prefilled rows `join` it and finished or cancelled rows leave it between steps.

A `Row` carries everything one decoded sequence needs, so rows of different tasks (spec, decode
config, phase schedule, logits processors, sampling generator) step together: the rows of a step are
scored in groups of (phase, scoring controls), each group by its head and its processor chain.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from osum_echat import tasks as task_table
from osum_echat.generation.kv_cache import DecodeCache, StepMask
from osum_echat.generation.prefill import prefill
from osum_echat.generation.processors import Rows, TagCotConstraint, apply_chain, build_chain, pick
from osum_echat.generation.streaming import PhaseState

PHASES = ("text", "speech")


class Vocab:
    """What the step needs to know about the model's ids (from the model and its tokenizer), and the
    processor chains of each decode config (made once, shared by the rows using that config)."""

    def __init__(self, model):
        self.model = model
        self.eos = model.text_ids.eos
        self.marker = model.speech_token_num - 1  # opens and closes the speech span
        self.text_size, self.speech_size = model.llm_vocab_size, model.speech_token_num
        tok = model.tokenizer
        prefix = tok.encode(task_table.TAG_COT_AGE_PREFIX, add_special_tokens=False)
        allowed = [tok.encode(w, add_special_tokens=False)[0] for w in task_table.TAG_COT_AGE_LABELS]
        self.tag_cot_ids = (prefix, allowed)
        self._chains = {}

    @staticmethod
    def scoring_key(conf):
        """The part of a DecodeConfig that decides how a row is scored and picked (not its caps or
        seed): rows with equal keys are scored together."""
        return dataclasses.replace(conf, max_text_tokens=0, max_speech_tokens=0, max_total_tokens=None,
                                   max_audio_frames=0, seed=0)

    def chains(self, conf) -> dict:
        key = self.scoring_key(conf)
        if key not in self._chains:
            tag_cot = TagCotConstraint(*self.tag_cot_ids)
            self._chains[key] = {ph: build_chain(key, ph, marker=self.marker, tag_cot=tag_cot) for ph in PHASES}
        return self._chains[key]


@dataclasses.dataclass
class Row:
    """One decoded sequence: its task, controls, phase, what it produced and its processor state."""
    key: str
    spec: object  # TaskSpec
    conf: object  # DecodeConfig
    chains: dict  # phase -> processor chain
    state: PhaseState
    history: dict  # phase -> ids produced in that phase's id space (a fed span marker included)
    raw: list  # joint id space: text ids, speech codes offset by the text vocabulary
    proc_state: dict
    seen: dict  # phase -> (V,) bool of ids produced, for the penalties; None when no processor needs it
    generator: Optional[torch.Generator]
    cancelled: bool = False

    @classmethod
    def start(cls, vocab: Vocab, key: str, spec, conf, generator: Optional[torch.Generator] = None) -> "Row":
        start_speech = [vocab.marker] if spec.decode_phases == "speech" else []
        chains = vocab.chains(conf)
        dev = vocab.model.device
        sizes = {"text": vocab.text_size, "speech": vocab.speech_size}
        seen = {ph: torch.zeros(sizes[ph], dtype=torch.bool, device=dev)
                if any(hasattr(p, "penalty") for p in chains[ph]) else None for ph in PHASES}
        if seen["speech"] is not None and start_speech:
            seen["speech"][vocab.marker] = True
        return cls(key, spec, conf, chains, PhaseState.start(spec.decode_phases),
                   {"text": [], "speech": list(start_speech)}, [vocab.text_size + c for c in start_speech], {},
                   seen, generator if conf.do_sample else None)

    @property
    def done(self) -> bool:
        return self.state.done or self.cancelled


def score_and_pick(vocab: Vocab, rows: list, hidden: torch.Tensor):
    """Scores each row's last hidden state (len(rows), D) by the head of its phase, through its
    processors; appends the chosen id to each row. Returns (ids, their embeddings (len(rows), D),
    the phase each id was chosen in)."""
    model = vocab.model
    ids = torch.empty(len(rows), dtype=torch.long, device=hidden.device)
    next_embeds = torch.empty_like(hidden)
    phases = [row.state.phase for row in rows]
    groups = {}
    for j, row in enumerate(rows):
        groups.setdefault((phases[j], id(row.chains)), []).append(j)
    for (phase, _), idx in groups.items():
        sel = torch.tensor(idx, device=hidden.device) if len(idx) < len(rows) else None
        h = hidden if sel is None else hidden[sel]
        head = model.lm_head if phase == "text" else model.speech_head
        scores = head(h).float()
        group = [rows[j] for j in idx]
        seen = [row.seen[phase] for row in group]
        view = Rows([row.history[phase] for row in group],
                    torch.stack(seen) if seen[0] is not None else None,
                    [row.proc_state for row in group])
        scores = apply_chain(group[0].chains[phase], scores, view)
        if phase == "text":
            for k, row in enumerate(group):
                if row.state.must_end_text(row.conf):
                    scores[k] = float("-inf")
                    scores[k, vocab.eos] = 0.0
                    row.state.hit_max_text_tokens = True
        do_sample = group[0].conf.do_sample
        chosen = pick(scores, do_sample, [row.generator for row in group] if do_sample else None)
        table = model.embed_tokens if phase == "text" else model.speech_token_emded
        emb = table(chosen[:, None])[:, 0].to(hidden.dtype)
        if sel is None:
            ids, next_embeds = chosen, emb
        else:
            ids[sel], next_embeds[sel] = chosen, emb
    for row, phase, token in zip(rows, phases, ids.tolist()):
        if row.seen[phase] is not None:
            row.seen[phase][token] = True
        row.history[phase].append(token)
        row.raw.append(token if phase == "text" else vocab.text_size + token)
        row.state.advance(token, eos=vocab.eos, marker=vocab.marker, conf=row.conf)
    return ids, next_embeds, phases


class DecodeBatch:
    """Rows in one left-padded KV cache (every row ends at the last column), each with the hidden
    state its next id is chosen from."""

    def __init__(self, vocab: Vocab, rows: list, cache: DecodeCache, hidden: torch.Tensor,
                 last_pos: torch.Tensor, step_mask: StepMask):
        self.vocab, self.rows = vocab, rows
        self.cache, self.hidden, self.last_pos, self.step_mask = cache, hidden, last_pos, step_mask

    @classmethod
    def prefill(cls, vocab: Vocab, rows: list, embeds: list) -> "DecodeBatch":
        cache, hidden, last_pos, step_mask = prefill(vocab.model.base_llm().model, embeds)
        return cls(vocab, list(rows), cache, hidden, last_pos, step_mask)

    def step(self) -> list:
        """One id for every row, then the rows that are done leave and the others are fed their id.
        Returns [(row, phase, id)] in row order."""
        ids, next_embeds, phases = score_and_pick(self.vocab, self.rows, self.hidden)
        out = list(zip(self.rows, phases, ids.tolist()))
        next_embeds = self.keep([j for j, row in enumerate(self.rows) if not row.done], next_embeds)
        if self.rows:
            self.last_pos = self.last_pos + 1
            llm_out = self.vocab.model.base_llm().model(
                inputs_embeds=next_embeds[:, None], attention_mask=self.step_mask.next(),
                position_ids=self.last_pos[:, None], past_key_values=self.cache, use_cache=True)
            self.hidden = llm_out.last_hidden_state[:, -1]
        return out

    def keep(self, keep: list, along: Optional[torch.Tensor] = None):
        """Keep rows `keep` (indices, in order); returns `along` (one entry per row) cut the same way."""
        if len(keep) < len(self.rows):
            self.rows = [self.rows[j] for j in keep]
            if keep:
                sel = torch.tensor(keep, device=self.hidden.device)
                self.cache.batch_select_indices(sel)
                self.step_mask.select(keep, sel)
                self.hidden, self.last_pos = self.hidden[sel], self.last_pos[sel]
                along = along[sel] if along is not None else None
        return along

    def trim(self, min_columns: int = 1) -> int:
        """Drop the leading cache columns no remaining row attends to (padding for rows that have
        left); returns how many. Only the scheduler trims: the attention then sums over fewer
        masked columns, which may move float rounding, and the offline decoder keeps its ids."""
        n = self.step_mask.unused_prefix() if self.rows else 0
        if n < min_columns:
            return 0
        for layer in self.cache.layers:
            layer.drop_leading(n)
        self.step_mask.drop_leading(n)
        return n

    def join(self, other: "DecodeBatch") -> None:
        """Append the rows of `other` (a fresh prefill) at a step boundary: both caches are laid
        left-padded into one, as wide as the longer; the step mask hides the padding."""
        if not self.rows:
            self.rows, self.cache, self.hidden = other.rows, other.cache, other.hidden
            self.last_pos, self.step_mask = other.last_pos, other.step_mask
            return
        width = max(self.step_mask.length, other.step_mask.length)
        self.cache = DecodeCache.joined([self.cache, other.cache], width)
        self.step_mask = StepMask.joined([self.step_mask, other.step_mask], width)
        self.rows = self.rows + other.rows
        self.hidden = torch.cat([self.hidden, other.hidden.to(self.hidden.dtype)])
        self.last_pos = torch.cat([self.last_pos, other.last_pos])
