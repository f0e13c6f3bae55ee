"""Cross-entropy over one or more output heads, computed in chunks.

The LLM text head (vocab ~152k) plus the speech head (4097) make a 2048-token
sequence's fp32 logits ~1.3 GB, and autograd would keep them for backward.
Here the loss is taken only at counted positions, a chunk of rows at a time,
each chunk under activation checkpointing, so at most one chunk of logits
exists at once (in forward and in backward).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as ckpt

IGNORE_ID = -100

Head = tuple  # (weight (V, H), bias (V,) or None)


def head_logits(hidden: torch.Tensor, heads: Sequence[Head]) -> torch.Tensor:
    """Concatenated logits of all heads, as float32."""
    parts = [F.linear(hidden, w, b) for w, b in heads]
    return torch.cat(parts, dim=-1).float()


def _chunk_loss(hidden: torch.Tensor, targets: torch.Tensor, *flat_heads):
    heads = list(zip(flat_heads[0::2], flat_heads[1::2]))
    logits = head_logits(hidden, heads)
    loss_sum = F.cross_entropy(logits, targets, reduction="sum")
    correct = (logits.argmax(-1) == targets).sum()
    return loss_sum, correct


def chunked_cross_entropy(hidden: torch.Tensor, targets: torch.Tensor, heads: Sequence[Head],
                          chunk_size: int = 1024):
    """Sum of CE and number of correct argmax predictions over rows of `hidden`.

    hidden (N, H) and targets (N,) hold only counted positions (no IGNORE_ID).
    Returns (loss_sum, correct) as 0-d tensors.
    """
    flat = []
    for w, b in heads:
        flat += [w, b]
    loss_sum = hidden.new_zeros((), dtype=torch.float32)
    correct = torch.zeros((), dtype=torch.long, device=hidden.device)
    for start in range(0, hidden.size(0), chunk_size):
        h, t = hidden[start:start + chunk_size], targets[start:start + chunk_size]
        if torch.is_grad_enabled() and h.requires_grad:
            part, right = ckpt.checkpoint(_chunk_loss, h, t, *flat, use_reentrant=False)
        else:
            part, right = _chunk_loss(h, t, *flat)
        loss_sum = loss_sum + part
        correct = correct + right.detach()
    return loss_sum, correct


def shifted_loss(hidden: torch.Tensor, target: torch.Tensor, heads: Sequence[Head],
                 chunk_size: Optional[int] = 1024):
    """Next-token loss: position t predicts target[t + 1].

    hidden (B, L, H), target (B, L) with IGNORE_ID where nothing is learnt.
    Returns dict(loss=mean CE over counted positions, acc, num_tokens).
    chunk_size None computes the plain full-logits version (the reference).
    """
    shift_target = target[:, 1:].reshape(-1)
    shift_hidden = hidden[:, :-1].reshape(-1, hidden.size(-1))
    if chunk_size is None:
        logits = head_logits(shift_hidden, heads)
        count = (shift_target != IGNORE_ID).sum()
        loss = F.cross_entropy(logits, shift_target, ignore_index=IGNORE_ID)
        keep = shift_target != IGNORE_ID
        correct = (logits.argmax(-1)[keep] == shift_target[keep]).sum()
        return dict(loss=loss, acc=correct.float() / count.clamp(min=1), num_tokens=int(count))
    keep = shift_target != IGNORE_ID
    rows = keep.nonzero(as_tuple=True)[0]
    count = rows.numel()
    loss_sum, correct = chunked_cross_entropy(shift_hidden[rows], shift_target[rows], heads, chunk_size)
    loss = loss_sum / max(count, 1)
    return dict(loss=loss, acc=correct.float() / max(count, 1), num_tokens=count)
