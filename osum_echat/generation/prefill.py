"""The prefill of a decode chunk: its prompts' keys/values in one left-padded KV cache.

    cache, hidden, last_pos, step_mask = prefill(llm, [embeds of each prompt, (L_i, D)])

Every row ends at the last column (left padding), `hidden` holds each row's last hidden state,
`last_pos` its last position, `step_mask` the attention mask of the steps that follow.

A single prompt runs as one sequence, exactly as upstream's generate() runs it. For several:
  * the positions every prompt shares (the task's system prompt and chat template: 95 of the
    decode bench's 114-135) run once, and the rows continue from their keys/values;
  * the rows' own parts run as one left-padded batch on top (row i's cache: prefix, padding, its
    own positions; the step mask hides the padding) - unless, on a CPU, the padding would add more
    than half the work (PAD_SLACK; e.g. audio prompts of very different lengths): a CPU prefill is
    compute-bound, so padding costs its full price there, and each row then runs alone and the
    rows are laid left-padded into one cache (row i's: padding, prefix, its own positions).
The rows see the keys and values decoding them alone gives, up to float rounding (MKL's sums
depend on the number of rows). At the bench's 0.5B shape (8 prompts, 2 threads, float32) the
prefill takes 4.2 - 4.8 s as one padded batch of whole prompts (1,080 positions), 3.2 s row by row
after the shared prefix (matmuls of 19 - 40 rows run well below the large-matmul rate), 2.7 s
together after it (95 + 320 positions at ~140 GFLOP/s).
"""
from __future__ import annotations

import torch

from osum_echat.generation.kv_cache import DecodeCache, StepMask

PAD_SLACK = 1.5  # on a CPU, rows run together while padding adds at most half the work


def shared_prefix(embeds: list) -> int:
    """How many leading positions all prompts share, leaving each at least one of its own."""
    n = min(len(e) for e in embeds) - 1
    if len(embeds) < 2 or n <= 0:
        return 0
    first = embeds[0][:n]
    same = torch.ones(n, dtype=torch.bool, device=first.device)
    for e in embeds[1:]:
        same &= (e[:n] == first).all(-1)
    return n if bool(same.all()) else int((~same).int().argmax())


def prefill(llm, embeds: list):
    b, device = len(embeds), embeds[0].device
    layers = llm.config.num_hidden_layers
    shared = shared_prefix(embeds)
    base = DecodeCache(layers)
    if shared:
        _run(llm, embeds[0][None, :shared], torch.arange(shared, device=device)[None], None, base)
    rest = [e[shared:] for e in embeds]
    lengths = [len(r) for r in rest]
    width = max(lengths)
    if device.type != "cpu" or b * width <= PAD_SLACK * sum(lengths):
        return _together(llm, rest, shared, base.copy(rows=b))
    return _row_by_row(llm, rest, shared, base)


def _left_padded_mask(lengths: list, width: int, device) -> torch.Tensor:
    mask = torch.zeros(len(lengths), width, dtype=torch.long, device=device)
    for i, n in enumerate(lengths):
        mask[i, width - n:] = 1
    return mask


def _together(llm, rest: list, shared: int, cache: DecodeCache):
    """The rows' own parts left-padded into one batch on top of the shared keys/values: row i's
    cache is [prefix | padding | its own positions]."""
    b, width, device = len(rest), max(len(r) for r in rest), rest[0].device
    own = _left_padded_mask([len(r) for r in rest], width, device)
    padded = rest[0].new_zeros(b, width, rest[0].size(-1))
    for i, r in enumerate(rest):
        padded[i, width - len(r):] = r
    positions = shared + (own.cumsum(-1) - 1).clamp(min=0)
    mask = torch.cat([own.new_ones(b, shared), own], 1)
    hidden = _run(llm, padded, positions, mask, cache)
    return cache, hidden, positions[:, -1], StepMask(mask, llm.config)


def _row_by_row(llm, rest: list, shared: int, base: DecodeCache):
    """Each row's own part alone on a copy of the shared keys/values, then all rows left-padded
    into one cache: row i's cache is [padding | prefix | its own positions]."""
    lengths = [shared + len(r) for r in rest]
    width, device = max(lengths), rest[0].device
    caches, hidden = [], []
    for r in rest:
        caches.append(base.copy())
        pos = torch.arange(shared, shared + len(r), device=device)[None]
        hidden.append(_run(llm, r[None], pos, None, caches[-1]))
    mask = _left_padded_mask(lengths, width, device)
    last_pos = torch.tensor(lengths, device=device) - 1
    return DecodeCache.left_padded(caches, width), torch.cat(hidden), last_pos, StepMask(mask, llm.config)


def _run(llm, embeds: torch.Tensor, positions: torch.Tensor, mask, cache: DecodeCache) -> torch.Tensor:
    """Positions on top of `cache` (mask: None or (rows, cached + new)); the last hidden states."""
    out = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=cache,
              use_cache=True)
    return out.last_hidden_state[:, -1]
