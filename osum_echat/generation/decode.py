"""Autoregressive decoding for every task, driven by the task table.

The prompt is the model's own training assembly cut after the assistant start
(`model.assemble(batch, with_output=False)`), so inference sees exactly the
sequence layout training saw. The decode loop keeps the LLM's KV cache and
scores the text head, plus the speech head when the task produces speech
(one id space: text ids, then speech codes offset by the text vocabulary,
as in training). What may be produced and when to stop is read from the
task's TaskSpec:

  text output only        text vocabulary; stop at the text eos
  speech output only      speech codes; the speech bos is fed first (as
                          upstream does for TTS); stop at the speech eos
  text then speech        both; stop when the speech eos closes the speech
  (streaming or not)      span opened by the speech bos
Items are decoded one at a time: upstream's layout pads inside the sequence,
which a single growing KV cache cannot continue for a whole batch.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from osum_echat import tasks as task_table
from osum_echat.models.osum_echat import spec_for_output_type


@dataclasses.dataclass
class DecodeConfig:
    max_text_tokens: int = 512
    max_speech_tokens: int = 2000
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0  # applied to speech codes only (upstream's s2s processor idea)
    seed: int = 0


@dataclasses.dataclass
class Hypothesis:
    key: str
    output_type: str
    text: str  # the answer, think part removed
    think: str  # the chain of thought, "" when the task has none
    speech_tokens: list  # speech codes without the bos/eos markers
    raw_ids: list  # every id produced, in the joint text+speech id space


def pick_next(logits: torch.Tensor, allowed: torch.Tensor, history: list, conf: DecodeConfig,
              speech_start: int, generator: Optional[torch.Generator]) -> int:
    """One id from (V,) logits restricted to `allowed` (a bool mask)."""
    logits = logits.float().masked_fill(~allowed, float("-inf"))
    if conf.repetition_penalty != 1.0 and history:
        seen = torch.tensor(sorted({i for i in history if i >= speech_start}), dtype=torch.long)
        if len(seen):
            vals = logits[seen]
            logits[seen] = torch.where(vals > 0, vals / conf.repetition_penalty, vals * conf.repetition_penalty)
    if not conf.do_sample:
        return int(logits.argmax())
    logits = logits / max(conf.temperature, 1e-5)
    if conf.top_k > 0:
        kth = torch.topk(logits, min(conf.top_k, int(allowed.sum()))).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if conf.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > conf.top_p
        logits[order[drop]] = float("-inf")
    return int(torch.multinomial(logits.softmax(-1), 1, generator=generator))


class Decoder:
    def __init__(self, model, conf: DecodeConfig | None = None):
        self.model = model
        self.conf = conf or DecodeConfig()
        self.vocab = model.llm_vocab_size
        self.n_speech = model.speech_token_num
        self.speech_marker = self.vocab + self.n_speech - 1  # speech bos == speech eos code
        self.text_eos = model.text_ids.eos

    def allowed_ids(self, speech_output: bool, text_output: bool) -> torch.Tensor:
        size = self.vocab + (self.n_speech if speech_output else 0)
        allowed = torch.zeros(size, dtype=torch.bool)
        if text_output:
            allowed[: len(self.model.tokenizer)] = True  # ids past the tokenizer are padding rows
        if speech_output:
            allowed[self.vocab:] = True
        return allowed

    @torch.no_grad()
    def decode(self, batch) -> list[Hypothesis]:
        spec = spec_for_output_type(batch.output_type)
        return [self._decode_one(select_item(batch, i), spec) for i in range(len(batch.keys))]

    def _decode_one(self, item, spec) -> Hypothesis:
        model, conf = self.model, self.conf
        generator = torch.Generator().manual_seed(conf.seed) if conf.do_sample else None
        x = model.assemble(item, with_output=False)
        text_output = spec.text_target
        allowed = self.allowed_ids(spec.speech_output, text_output)
        llm = model.base_llm().model
        out = llm(inputs_embeds=x.inputs_embeds, attention_mask=x.attention_mask.long(),
                  position_ids=x.position_ids, use_cache=True)
        cache, hidden = out.past_key_values, out.last_hidden_state[:, -1]
        position = int(x.position_ids[0, -1])
        mask = x.attention_mask.long()
        produced: list[int] = []
        if not text_output:  # speech only: feed the speech bos, as upstream's TTS does
            produced.append(self.speech_marker)
        limit = (conf.max_text_tokens if text_output else 0) + (conf.max_speech_tokens if spec.speech_output else 0)
        while len(produced) < limit:
            if produced:
                if self._finished(produced, spec):
                    break
                ids = torch.tensor([[produced[-1]]], device=model.device)
                position += 1
                mask = torch.cat([mask, mask.new_ones(1, 1)], 1)
                step = llm(inputs_embeds=model.embed_ids(ids), attention_mask=mask,
                           position_ids=torch.tensor([[position]], device=model.device),
                           past_key_values=cache, use_cache=True)
                cache, hidden = step.past_key_values, step.last_hidden_state[:, -1]
            logits = self._logits(hidden, spec.speech_output)[0].cpu()
            produced.append(pick_next(logits, allowed, produced, conf, self.vocab, generator))
        return self._hypothesis(item, spec, produced)

    def _logits(self, hidden: torch.Tensor, speech_output: bool) -> torch.Tensor:
        logits = self.model.lm_head(hidden)
        if speech_output:
            logits = torch.cat([logits, self.model.speech_head(hidden).to(logits.dtype)], -1)
        return logits

    def _finished(self, produced: list, spec) -> bool:
        last = produced[-1]
        if not spec.speech_output:
            return last == self.text_eos
        # the speech span opens and closes with the same marker code
        return last == self.speech_marker and produced.count(self.speech_marker) >= 2

    def _hypothesis(self, item, spec, produced: list) -> Hypothesis:
        text_ids = [i for i in produced if i < self.vocab and i != self.text_eos]
        codes = [i - self.vocab for i in produced if i >= self.vocab and i != self.speech_marker]
        text = self.model.tokenizer.decode(text_ids, skip_special_tokens=True)
        think, answer = split_think(text)
        return Hypothesis(item.keys[0], spec.output_type, answer, think, codes, produced)


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


def split_think(text: str) -> tuple[str, str]:
    """("reasoning", "answer") from "<think>reasoning<think end>answer"; ("", text) if no think."""
    open_, close = task_table.THINK_OPEN, task_table.THINK_CLOSE
    if close in text:
        head, answer = text.split(close, 1)
        return head.replace(open_, "", 1).strip(), answer.strip()
    return "", text.strip()
