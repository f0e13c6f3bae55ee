"""Autoregressive decoding for every task, driven by the task table.

Each item's prompt is the model's own training assembly cut after the assistant start
(`model.assemble(item, with_output=False)`); prompt_style "upstream_infer" swaps in the system
text upstream's generate functions use where it differs (tasks.UPSTREAM_INFER_SYSTEM_TEXT). The
prompts of a chunk (`batch_size` items) share one padded KV cache (prefill.py) and are stepped by
stepper.py, the decode step the continuous-batching scheduler (scheduler.py) runs too; rows finish
independently and leave the cache when they do.

Two phases with a phase mask (as upstream's patched Qwen2, patches/modelling_qwen2_infer_gpu.py):
a row in the text phase is scored by the text head (lm_head) and its ids are embedded with the
text table; in the speech phase the speech head scores codes 0..N-1 (N-1 is the span marker) and
the speech table embeds them. The schedule and stop rules per task are in streaming.py, the
decode controls (upstream's per-task presets, overridable) in the task table, the logits
processors in processors.py.

Hypothesis.raw_ids uses one joint id space: text ids, then speech codes offset by the text
vocabulary (a fed span marker included).
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Optional

import torch

from osum_echat import tasks as task_table
from osum_echat.generation.packed_linear import MODES as PACK_MODES, packed_linears
from osum_echat.generation.stepper import DecodeBatch, Row, Vocab
from osum_echat.models.osum_echat import spec_for_output_type
from osum_echat.tasks import DecodeConfig

DEFAULT_PROMPT_STYLE = "train"
DECODE_FIELDS = tuple(f.name for f in dataclasses.fields(DecodeConfig))


@dataclasses.dataclass
class Hypothesis:
    key: str
    output_type: str
    text: str = ""  # the answer, think part removed
    think: str = ""  # the chain of thought, "" when the task has none
    speech_tokens: list = dataclasses.field(default_factory=list)  # codes, span markers removed
    raw_ids: list = dataclasses.field(default_factory=list)  # joint text+speech id space
    hit_max_text_tokens: bool = False
    hit_max_speech_tokens: bool = False
    error: Optional[str] = None  # "reason: message"; the other fields are then empty


class ItemError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


@dataclasses.dataclass
class _Prompt:
    index: int
    key: str
    embeds: torch.Tensor  # (L, D)


def utterance_seed(key: str, seed: int = 0) -> int:
    """Seed of one utterance's sampling: from its key, so it does not depend on batching or sharding."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") & (2 ** 63 - 1)


class Decoder:
    def __init__(self, model, overrides: Optional[dict] = None, greedy: bool = False,
                 prompt_style: str = DEFAULT_PROMPT_STYLE, batch_size: int = 1, packed_weights: str = "auto"):
        if isinstance(overrides, DecodeConfig):  # the old Decoder(model, conf): every field set explicitly
            overrides = dataclasses.asdict(overrides)
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(DECODE_FIELDS))
        if unknown:
            raise ValueError(f"unknown decode override(s) {unknown}; known: {', '.join(DECODE_FIELDS)}")
        if prompt_style not in task_table.PROMPT_STYLES:
            raise ValueError(f"prompt_style {prompt_style!r}: expected one of {task_table.PROMPT_STYLES}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        if packed_weights not in PACK_MODES:
            raise ValueError(f"packed_weights {packed_weights!r}: expected one of {PACK_MODES}")
        self.model = model
        self.overrides, self.greedy = overrides, greedy
        self.prompt_style, self.batch_size = prompt_style, batch_size
        self.packed_weights = packed_weights  # CPU steps on packed weight copies: packed_linear.py
        self.vocab = Vocab(model)
        self.eos, self.marker = self.vocab.eos, self.vocab.marker
        self.context = model.base_llm().config.max_position_embeddings

    def config_for(self, spec) -> DecodeConfig:
        conf = dataclasses.replace(spec.decode, **self.overrides)
        return conf.greedy() if self.greedy else conf

    # ------------------------------------------------------------------ API
    @torch.no_grad()
    def decode(self, batch) -> list:
        """One Hypothesis per item, in batch order; an item that cannot be decoded gets .error."""
        spec = spec_for_output_type(batch.output_type)
        conf = self.config_for(spec)
        hyps: list = [None] * len(batch.keys)
        prompts = []
        for i in range(len(batch.keys)):
            try:
                prompts.append(self._prompt(select_item(batch, i), i, spec, conf))
            except ItemError as e:
                hyps[i] = Hypothesis(batch.keys[i], spec.output_type, error=str(e))
            except Exception as e:  # noqa: BLE001 - one broken item must not stop the batch
                hyps[i] = Hypothesis(batch.keys[i], spec.output_type, error=f"decode_error: {type(e).__name__}: {e}")
        for start in range(0, len(prompts), self.batch_size):
            for p, hyp in self._decode_safely(prompts[start:start + self.batch_size], spec, conf):
                hyps[p.index] = hyp
        return hyps

    # -------------------------------------------------------------- prompts
    def prompt(self, item, spec, conf: DecodeConfig) -> torch.Tensor:
        """The prompt embeds (L, D) of a batch of one; ItemError when the item cannot be decoded."""
        return self._prompt(item, 0, spec, conf).embeds

    def _prompt(self, item, index: int, spec, conf: DecodeConfig) -> _Prompt:
        key = item.keys[0]
        self._check_input(item, spec, conf)
        if spec.speech_input:  # its own length: decoded as if alone, whatever the batch's padding
            item = dataclasses.replace(item, feats=item.feats[:, :int(item.feats_lengths[0])])
        model = self.model
        x = model.assemble(item, with_output=False)
        embeds = x.inputs_embeds[0][x.attention_mask[0]]
        system = spec.infer_system_text(self.prompt_style)
        if system != spec.system_text:
            old = len(model._text(spec.system_text))
            embeds = torch.cat([model.embed_tokens(model._text(system)).to(embeds.dtype), embeds[old:]])
        if self.prompt_style == "upstream_infer":
            embeds = _upstream_bf16_rounding(embeds, spec.output_type)
        if spec.decode_phases == "speech":  # upstream's TTS start: the span marker is part of the prompt
            marker = torch.tensor([self.marker], device=model.device)
            embeds = torch.cat([embeds, model.speech_token_emded(marker).to(embeds.dtype)])
        if len(embeds) >= self.context:
            raise ItemError("prompt_too_long", f"{key}: prompt of {len(embeds)} positions does not fit the "
                            f"LLM's context of {self.context}; shorten the input or history")
        return _Prompt(index, key, embeds)

    def _check_input(self, item, spec, conf: DecodeConfig) -> None:
        key = item.keys[0]
        if spec.speech_input:
            frames = int(item.feats_lengths[0])
            if frames > conf.max_audio_frames:
                raise ItemError("audio_too_long", f"{key}: {frames} frames is longer than the encoder's "
                                f"{conf.max_audio_frames} (max_audio_frames); cut the audio")
            if frames == 0:
                raise ItemError("empty_audio", f"{key}: the audio has no frames")
            return
        if spec.uses_prompt:
            n = int(item.prompt_lengths[0]) if item.prompt is not None else 0
        else:
            n = int(item.target_lengths[0])
            n -= int(n > 0 and int(item.target[0, n - 1]) == self.eos)
        if n <= 0:
            raise ItemError("empty_text", f"{key}: the input text of {spec.tag} is empty")

    # ------------------------------------------------------------- decoding
    def _decode_safely(self, prompts: list, spec, conf: DecodeConfig):
        if not prompts:
            return []
        try:
            return list(zip(prompts, self._decode_chunk(prompts, spec, conf)))
        except Exception as e:  # noqa: BLE001
            if len(prompts) > 1:  # find the item that breaks the chunk; the others still decode
                return [r for p in prompts for r in self._decode_safely([p], spec, conf)]
            return [(prompts[0], Hypothesis(prompts[0].key, spec.output_type,
                                            error=f"decode_error: {type(e).__name__}: {e}"))]

    def _decode_chunk(self, prompts: list, spec, conf: DecodeConfig) -> list:
        rows = [self.start_row(p.key, spec, conf) for p in prompts]
        batch = DecodeBatch.prefill(self.vocab, rows, [p.embeds for p in prompts])
        model = self.model
        with packed_linears([model.base_llm().model, model.lm_head, model.speech_head], self.packed_weights,
                            len(prompts)):
            while batch.rows:
                batch.step()
        return [hypothesis(self.vocab, row) for row in rows]

    def start_row(self, key: str, spec, conf: DecodeConfig) -> Row:
        """A fresh row for one prompt, its sampling generator seeded from its key."""
        gen = (torch.Generator(self.model.device).manual_seed(utterance_seed(key, conf.seed))
               if conf.do_sample else None)
        return Row.start(self.vocab, key, spec, conf, gen)


def hypothesis(vocab: Vocab, row: Row) -> Hypothesis:
    """The Hypothesis of a row (done, or stopped early)."""
    text_ids = [i for i in row.history["text"] if i != vocab.eos]
    text = vocab.model.tokenizer.decode(text_ids, skip_special_tokens=True) if text_ids else ""
    think, answer = split_think(text)
    codes = [c for c in row.history["speech"] if c != vocab.marker]
    st = row.state
    return Hypothesis(row.key, row.spec.output_type, answer, think, codes, list(row.raw),
                      st.hit_max_text_tokens, st.hit_max_speech_tokens)


def _upstream_bf16_rounding(embeds: torch.Tensor, output_type: str) -> torch.Tensor:
    when = task_table.UPSTREAM_INFER_BF16_PROMPT.get(output_type)
    half = embeds.dtype in (torch.float16, torch.bfloat16)
    if when == "always" or (when == "half" and half):
        return embeds.to(torch.bfloat16).to(embeds.dtype)
    return embeds


def select_item(batch, i: int):
    """Item i of a Batch as a batch of one (padding inside stays masked by the assembly)."""
    fields = {}
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            value = value[i:i + 1]
        elif isinstance(value, list):
            value = value[i:i + 1]
        fields[f.name] = value
    return dataclasses.replace(batch, **fields)


def split_think(text: str) -> tuple:
    """("reasoning", "answer") from "<think>reasoning<think end>answer"; ("", text) if no think.
    Nothing is stripped: the answer is the decoded text as upstream returns it."""
    open_, close = task_table.THINK_OPEN, task_table.THINK_CLOSE
    if close in text:
        head, answer = text.split(close, 1)
        return head.replace(open_, "", 1), answer
    return "", text
