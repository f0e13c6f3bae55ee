"""The prefill of a decode chunk: its prompts' keys/values in one left-padded KV cache.

    cache, hidden, last_pos, step_mask = prefill(llm, [embeds of each prompt, (L_i, D)])

Every row ends at the last column (left padding), `hidden` holds each row's last hidden state,
`last_pos` its last position, `step_mask` the attention mask of the steps that follow.

A single prompt runs as one sequence, exactly as upstream's generate() runs it. For several
prompts on a CPU the prefill is compute-bound, so running the rows together buys nothing while the
left padding costs work (a third more at the decode bench's lengths); instead
  * the positions every prompt shares (the task's system prompt and chat template: ~100 of the
    bench's 110-130) run once, and each row continues from a copy of their keys/values;
  * each row's own part runs alone, and the rows are laid left-padded into one cache.
On other devices the padded rows run as one batch. Either way the rows see the keys and values
decoding them alone gives, up to float rounding (MKL's sums depend on the number of rows).
"""
from __future__ import annotations

import torch

from osum_echat.generation.kv_cache import DecodeCache, StepMask


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
    b, width = len(embeds), max(len(e) for e in embeds)
    device = embeds[0].device
    mask = torch.zeros(b, width, dtype=torch.long, device=device)
    for i, e in enumerate(embeds):
        mask[i, width - len(e):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    layers = llm.config.num_hidden_layers
    step_mask = StepMask(mask, llm.config)
    if b > 1 and device.type != "cpu":
        cache = DecodeCache(layers)
        padded = embeds[0].new_zeros(b, width, embeds[0].size(-1))
        for i, e in enumerate(embeds):
            padded[i, width - len(e):] = e
        out = llm(inputs_embeds=padded, attention_mask=mask, position_ids=positions, past_key_values=cache,
                  use_cache=True)
        return cache, out.last_hidden_state[:, -1], positions[:, -1], step_mask
    shared = shared_prefix(embeds)
    base = None
    if shared:
        base = DecodeCache(layers)
        _run(llm, embeds[0][:shared], 0, base)
    caches, hidden = [], []
    for e in embeds:
        cache = DecodeCache(layers) if base is None else base.copy()
        hidden.append(_run(llm, e[shared:], shared, cache))
        caches.append(cache)
    cache = caches[0] if b == 1 else DecodeCache.left_padded(caches, width)
    return cache, torch.cat(hidden), positions[:, -1], step_mask


def _run(llm, embeds: torch.Tensor, start: int, cache: DecodeCache) -> torch.Tensor:
    """One prompt's positions start.. on top of `cache`; returns the last hidden state (1, D)."""
    pos = torch.arange(start, start + len(embeds), device=embeds.device)[None]
    out = llm(inputs_embeds=embeds[None], position_ids=pos, past_key_values=cache, use_cache=True)
    return out.last_hidden_state[:, -1]
