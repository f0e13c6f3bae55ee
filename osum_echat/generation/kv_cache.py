"""KV cache and attention mask of the decode loop, with no per-step work that grows with the context.

transformers' DynamicCache appends each step's keys/values with torch.cat (a copy of the whole
cache per layer per step), and the model rebuilds the 4-D attention mask from the growing 2-D
padding mask at every step. Here keys/values are written in place into buffers with spare room
(grown geometrically, so copies are amortised) and attention reads a view of the filled part; the
step mask is a view of a preallocated boolean buffer, passed to the model ready-made.

The prefill sees exactly what it sees with a DynamicCache (the keys/values it just computed), and
a step sees the same values and the same mask as before, so the decoded ids do not change.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

MIN_SPARE = 256  # positions added when a buffer grows; at least half the filled length


def _room(filled: int) -> int:
    return filled + max(MIN_SPARE, filled // 2)


class _BufferLayer(DynamicLayer):
    """One layer's keys/values in (batch, heads, capacity, head_dim) buffers."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.length, self.k_buf, self.v_buf = 0, None, None
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self.length, self.length + key_states.shape[-2]
        if self.k_buf is None or end > self.k_buf.shape[-2]:
            self._grow(end, key_states)
        self.k_buf[:, :, start:end] = key_states
        self.v_buf[:, :, start:end] = value_states
        self.length = end
        self.keys, self.values = self.k_buf[:, :, :end], self.v_buf[:, :, :end]
        if start == 0:  # the prefill attends over its own keys/values, as with a DynamicCache
            return key_states, value_states
        return self.keys, self.values

    def _grow(self, needed: int, like: torch.Tensor) -> None:
        b, h, _, d = like.shape
        k = torch.empty(b, h, _room(needed), d, dtype=self.dtype, device=self.device)
        v = torch.empty_like(k)
        if self.length:
            k[:, :, :self.length] = self.keys
            v[:, :, :self.length] = self.values
        self.k_buf, self.v_buf = k, v

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def drop_leading(self, n: int) -> None:
        """Forget the first n positions of every row (columns no row attends to)."""
        k = self.k_buf.new_empty(*self.k_buf.shape[:2], _room(self.length - n), self.k_buf.shape[-1])
        v = torch.empty_like(k)
        k[:, :, :self.length - n] = self.k_buf[:, :, n:self.length]
        v[:, :, :self.length - n] = self.v_buf[:, :, n:self.length]
        self.k_buf, self.v_buf, self.length = k, v, self.length - n
        self.keys, self.values = self.k_buf[:, :, :self.length], self.v_buf[:, :, :self.length]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self.k_buf, self.v_buf = self.k_buf[indices], self.v_buf[indices]
            self.keys, self.values = self.k_buf[:, :, :self.length], self.v_buf[:, :, :self.length]


class DecodeCache(Cache):
    """A Cache of buffer layers; `num_layers` as in the model's config."""

    def __init__(self, num_layers: int):
        super().__init__(layers=[_BufferLayer() for _ in range(num_layers)])

    def copy(self, rows: int = 1) -> "DecodeCache":
        """A cache of its own holding the same keys/values (a shared prompt prefix to continue),
        the single row repeated `rows` times."""
        out = DecodeCache(len(self.layers))
        for mine, theirs in zip(out.layers, self.layers):
            if theirs.get_seq_length():
                shape = (rows, *theirs.keys.shape[1:])
                mine.update(theirs.keys.expand(shape), theirs.values.expand(shape))
        return out

    @classmethod
    def left_padded(cls, caches: list, width: int) -> "DecodeCache":
        """One batch cache from single-row prefill caches: row i's keys/values end at position
        `width`; the positions before them are zeros, which the step mask hides."""
        out = cls(len(caches[0].layers))
        for layer, rows in zip(out.layers, zip(*(c.layers for c in caches))):
            first = rows[0].keys
            layer.lazy_initialization(first, first)
            shape = (len(rows), first.shape[1], _room(width), first.shape[-1])
            layer.k_buf, layer.v_buf = first.new_zeros(shape), first.new_zeros(shape)
            for i, row in enumerate(rows):
                layer.k_buf[i, :, width - row.length:width] = row.keys[0]
                layer.v_buf[i, :, width - row.length:width] = row.values[0]
            layer.length = width
            layer.keys, layer.values = layer.k_buf[:, :, :width], layer.v_buf[:, :, :width]
        return out

    @classmethod
    def joined(cls, caches: list, width: int) -> "DecodeCache":
        """One cache holding the rows of `caches` (each left-padded, its rows ending at its last
        column) one after the other, every row moved to end at column `width` (>= each length)."""
        out = cls(len(caches[0].layers))
        for layer, parts in zip(out.layers, zip(*(c.layers for c in caches))):
            first = parts[0].keys
            layer.lazy_initialization(first, first)
            rows = sum(p.keys.shape[0] for p in parts)
            shape = (rows, first.shape[1], _room(width), first.shape[-1])
            layer.k_buf, layer.v_buf = first.new_zeros(shape), first.new_zeros(shape)
            at = 0
            for p in parts:
                n = p.keys.shape[0]
                layer.k_buf[at:at + n, :, width - p.length:width] = p.keys
                layer.v_buf[at:at + n, :, width - p.length:width] = p.values
                at += n
            layer.length = width
            layer.keys, layer.values = layer.k_buf[:, :, :width], layer.v_buf[:, :, :width]
        return out


class StepMask:
    """The attention mask of one decode step for padded rows (padding anywhere in the prompt). With
    SDPA and full attention in every layer it is handed over ready-made, as the model would build
    it: None when no remaining row is padded (SDPA then needs no mask), else (rows, 1, 1, kv)
    booleans, True where a row attends. Otherwise (eager attention, sliding windows) the model gets
    the 2-D mask to build from."""

    def __init__(self, prompt_mask: torch.Tensor, config):
        self.ready_made = (config._attn_implementation == "sdpa"
                           and set(config.layer_types) == {"full_attention"})
        self.length = prompt_mask.shape[1]
        self.padded = [bool(p) for p in (prompt_mask == 0).any(-1).tolist()]
        self.buf = torch.ones(prompt_mask.shape[0], _room(self.length), dtype=torch.bool, device=prompt_mask.device)
        self.buf[:, :self.length] = prompt_mask.bool()

    @classmethod
    def joined(cls, masks: list, width: int) -> "StepMask":
        """The step mask of `DecodeCache.joined`: each mask's rows shifted to end at column `width`."""
        out = cls.__new__(cls)
        out.ready_made, out.length = masks[0].ready_made, width
        rows = sum(m.buf.shape[0] for m in masks)
        out.buf = masks[0].buf.new_ones(rows, _room(width))
        out.buf[:, :width] = False
        out.padded, at = [], 0
        for m in masks:
            n = m.buf.shape[0]
            out.buf[at:at + n, width - m.length:width] = m.buf[:, :m.length]
            out.padded += [p or m.length < width for p in m.padded]
            at += n
        return out

    def select(self, keep: list, index: torch.Tensor) -> None:
        self.padded = [self.padded[j] for j in keep]
        self.buf = self.buf[index]

    def unused_prefix(self) -> int:
        """Leading columns no row attends to (left behind by rows that were longer)."""
        used = self.buf[:, :self.length].any(0)
        return int(used.int().argmax()) if bool(used.any()) else 0

    def drop_leading(self, n: int) -> None:
        buf = self.buf.new_ones(self.buf.shape[0], _room(self.length - n))
        buf[:, :self.length - n] = self.buf[:, n:self.length]
        self.buf, self.length = buf, self.length - n
        self.padded = [not bool(row.all()) for row in self.buf[:, :self.length]]

    def next(self):
        """The attention_mask argument of a step that adds one position to every row."""
        self.length += 1
        if self.length > self.buf.shape[1]:
            grown = self.buf.new_ones(self.buf.shape[0], _room(self.length))
            grown[:, :self.buf.shape[1]] = self.buf
            self.buf = grown
        if not self.ready_made:
            return self.buf[:, :self.length]
        return {"full_attention": self.buf[:, None, None, :self.length] if any(self.padded) else None}
