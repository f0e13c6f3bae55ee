"""The Batch the data pipeline hands to the model (upstream processor.padding()'s dict, typed).

Items are sorted by feature length, longest first. Fields:
  keys                list[str]
  feats               float (B, T, 80), zero-padded. Text-input tasks
                      (text2text, text2token*) carry no audio: T = 0 and
                      feats_lengths = 0 (upstream's forward never reads feats
                      for them; upstream fills 10 s of noise instead).
  feats_lengths       int32 (B,)
  target              int64 (B, L) text label ids incl. the eos upstream
                      appends (none when the text ends with "<&&>"), padded -100
  target_lengths      int32 (B,)
  speech_tokens       int64 (B, S) speech codes wrapped with speech_token_num-1
                      at both ends, padded -100; S = 0 for tasks without speech output
  speech_tokens_length int32 (B,)
  prompt              int64 (B, P) user-prompt ids padded -1, or None when the
                      batch has no prompt (batches never mix the two)
  prompt_lengths      int32 (B,) or None
  history             per item, a list of turns {"wav": feat (L, 80), "txt": str,
                      "speech_token": list[int] (wrapped, or [])}
  task                list[str] canonical task tags
  output_type         str, one per batch
  txts                list[str] target texts as tokenized (think wrapped)
  extra               list[dict]
`batch["feats"]` works like upstream's dict; `batch.to(device)` moves tensors.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch
from torch.nn.utils.rnn import pad_sequence

IGNORE_ID = -100
PROMPT_PAD = -1


def _pad(seqs, value, dtype):
    tensors = [torch.as_tensor(s, dtype=dtype) for s in seqs]
    if all(t.numel() == 0 for t in tensors):
        return torch.zeros(len(tensors), 0, dtype=dtype)
    return pad_sequence(tensors, batch_first=True, padding_value=value)


@dataclasses.dataclass
class Batch:
    keys: list
    feats: torch.Tensor
    feats_lengths: torch.Tensor
    target: torch.Tensor
    target_lengths: torch.Tensor
    speech_tokens: torch.Tensor
    speech_tokens_length: torch.Tensor
    prompt: Optional[torch.Tensor]
    prompt_lengths: Optional[torch.Tensor]
    history: list
    task: list
    output_type: str
    txts: list
    extra: list
    worker: int = 0  # DataLoader worker that built it: the trainer counts batches per worker (resume)

    @classmethod
    def from_samples(cls, samples: list) -> "Batch":
        if not samples:
            raise ValueError("cannot build a Batch from no samples")
        types = {s["output_type"] for s in samples}
        if len(types) != 1:
            raise ValueError(f"a batch must hold one output_type, got {sorted(types)}")
        order = sorted(range(len(samples)), key=lambda i: -samples[i]["feat"].size(0))
        items = [samples[i] for i in order]
        feats = [s["feat"] for s in items]
        num_bins = feats[0].size(1)
        if max(f.size(0) for f in feats) == 0:
            padded_feats = torch.zeros(len(items), 0, num_bins)
        else:
            padded_feats = pad_sequence(feats, batch_first=True, padding_value=0.0)
        has_prompt = len(items[0]["prompt"]) > 0
        return cls(
            keys=[s["key"] for s in items],
            feats=padded_feats,
            feats_lengths=torch.tensor([f.size(0) for f in feats], dtype=torch.int32),
            target=_pad([s["label"] for s in items], IGNORE_ID, torch.int64),
            target_lengths=torch.tensor([len(s["label"]) for s in items], dtype=torch.int32),
            speech_tokens=_pad([s["speech_token"] for s in items], IGNORE_ID, torch.int64),
            speech_tokens_length=torch.tensor([len(s["speech_token"]) for s in items], dtype=torch.int32),
            prompt=_pad([s["prompt"] for s in items], PROMPT_PAD, torch.int64) if has_prompt else None,
            prompt_lengths=(torch.tensor([len(s["prompt"]) for s in items], dtype=torch.int32)
                            if has_prompt else None),
            history=[[{"wav": t["feat"], "txt": t.get("txt", ""), "speech_token": t.get("speech_token", [])}
                      for t in s.get("history") or []] for s in items],
            task=[s["task"] for s in items],
            output_type=items[0]["output_type"],
            txts=[s.get("txt", "") for s in items],
            extra=[s.get("extra", {}) for s in items],
        )

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, name: str):
        if name not in self:
            raise KeyError(name)
        return getattr(self, name)

    def __contains__(self, name: str) -> bool:
        # upstream checks `'prompt' in batch`: only present when the batch has prompts
        return name in _FIELDS and getattr(self, name) is not None

    def get(self, name: str, default=None):
        return getattr(self, name) if name in self else default

    def to(self, device, non_blocking: bool = False) -> "Batch":
        def move(x):
            return x.to(device, non_blocking=non_blocking) if isinstance(x, torch.Tensor) else x

        moved = {f: move(getattr(self, f)) for f in _FIELDS if f != "history"}
        moved["history"] = [[{**t, "wav": move(t["wav"])} for t in turns] for turns in self.history]
        return Batch(**moved)

    def __reduce__(self):
        # Crossing a process boundary (dataloader workers) every CPU tensor of the batch travels
        # inside ONE byte buffer: torch shares each tensor through its own file descriptor, a
        # round trip to the busy worker per tensor, which made 2 workers slower than 0 here.
        tensors = []

        def take(x):
            if isinstance(x, torch.Tensor) and x.device.type == "cpu":
                tensors.append(x)
                return _Slot(len(tensors) - 1)
            return x

        state = {f: take(getattr(self, f)) for f in _FIELDS if f != "history"}
        state["history"] = [[{**t, "wav": take(t["wav"])} for t in turns] for turns in self.history]
        flat, layout = _flatten(tensors)
        return _rebuild, (state, flat, layout)

    def pin_memory(self) -> "Batch":
        return Batch(**{f: (getattr(self, f).pin_memory() if isinstance(getattr(self, f), torch.Tensor)
                            else getattr(self, f)) for f in _FIELDS})


_FIELDS = tuple(f.name for f in dataclasses.fields(Batch))


@dataclasses.dataclass
class SkippedBatch:
    """Stands in for a batch a resumed run already trained on: counted, never padded (data/dataset.py)."""
    worker: int
    size: int


class _Slot:
    """Placeholder for the i-th tensor of a flattened batch."""

    def __init__(self, index: int):
        self.index = index


def _flatten(tensors):
    """All tensors as one uint8 buffer (8-byte aligned pieces) + (dtype, shape, offset) each."""
    pieces, layout, offset = [], [], 0
    for t in tensors:
        raw = t.contiguous().reshape(-1).view(torch.uint8) if t.numel() else torch.zeros(0, dtype=torch.uint8)
        layout.append((t.dtype, tuple(t.shape), offset))
        pad = -raw.numel() % 8
        pieces.append(raw)
        if pad:
            pieces.append(torch.zeros(pad, dtype=torch.uint8))
        offset += raw.numel() + pad
    flat = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.uint8)
    return flat, layout


def _rebuild(state: dict, flat: torch.Tensor, layout: list) -> Batch:
    def put(x):
        if not isinstance(x, _Slot):
            return x
        dtype, shape, offset = layout[x.index]
        size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        return flat[offset:offset + size].view(dtype).view(shape)

    fields = {f: put(v) for f, v in state.items() if f != "history"}
    fields["history"] = [[{**t, "wav": put(t["wav"])} for t in turns] for turns in state["history"]]
    return Batch(**fields)
