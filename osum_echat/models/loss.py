"""Cross-entropy over one or more output heads, computed in chunks.

The LLM text head (vocab ~152k) plus the speech head (4097) make a 2048-token
sequence's fp32 logits ~1.3 GB, and autograd would keep them for backward.
Here the loss is taken only at counted positions, a chunk of rows at a time,
and each chunk's gradients are computed right away (softmax minus one-hot),
so at most one chunk of logits exists at once and backward only scales the
stored gradients.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

IGNORE_ID = -100

Head = tuple  # (weight (V, H), bias (V,) or None)


def head_logits(hidden: torch.Tensor, heads: Sequence[Head]) -> torch.Tensor:
    """Concatenated logits of all heads, as float32."""
    parts = [F.linear(hidden.to(w.dtype), w, b) for w, b in heads]
    return torch.cat(parts, dim=-1).float()


def _logits_into_float(h, weights, biases, sizes) -> torch.Tensor:
    """float32 (rows, sum(sizes)) logits of all heads, written into one buffer."""
    out = torch.empty(h.size(0), sum(sizes), dtype=torch.float32, device=h.device)
    col = 0
    for w, b, size in zip(weights, biases, sizes):
        out[:, col:col + size] = F.linear(h.to(w.dtype), w, b)
        col += size
    return out


class _LinearCrossEntropy(torch.autograd.Function):
    """CE of softmax(concat_k(hidden @ W_k^T + b_k)) summed over rows, with
    the gradients computed in the same chunked pass (no logits are kept, no
    recomputation). Weight gradients accumulate in place in the weight's
    dtype, so the only full-size extra is one gradient per trained head."""

    @staticmethod
    def forward(ctx, hidden, targets, chunk_size, grad_enabled, *flat_heads):
        weights, biases = flat_heads[0::2], flat_heads[1::2]
        need = [grad_enabled and n for n in ctx.needs_input_grad]
        need_h = need[0]
        need_w = [need[4 + 2 * k] for k in range(len(weights))]
        need_b = [b is not None and need[5 + 2 * k] for k, b in enumerate(biases)]
        sizes = [w.shape[0] for w in weights]
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = [torch.zeros_like(w) if need else None for w, need in zip(weights, need_w)]
        grad_b = [torch.zeros(b.shape, dtype=torch.float32, device=b.device) if need else None
                  for b, need in zip(biases, need_b)]
        loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        train = need_h or any(need_w) or any(need_b)
        for start in range(0, hidden.size(0), chunk_size):
            h, t = hidden[start:start + chunk_size], targets[start:start + chunk_size]
            logits = _logits_into_float(h, weights, biases, sizes)
            picked = logits.gather(1, t[:, None]).squeeze(1)
            correct += (logits.argmax(-1) == t).sum()
            top = logits.amax(-1, keepdim=True)
            probs = logits.sub_(top).exp_()  # in place: one (chunk, vocab) buffer in all
            total = probs.sum(-1, keepdim=True)
            loss_sum += (top + total.log()).squeeze(1).sub_(picked).sum()
            if not train:
                continue
            grad = probs.div_(total)  # softmax - one-hot is d(CE)/d(logits)
            grad[torch.arange(t.numel(), device=t.device), t] -= 1.0
            for k, part in enumerate(grad.split(sizes, dim=1)):
                part = part.to(weights[k].dtype)
                if need_h:
                    grad_h[start:start + chunk_size] += part @ weights[k]
                if need_w[k]:
                    grad_w[k].addmm_(part.t(), h.to(weights[k].dtype))
                if need_b[k]:
                    grad_b[k] += part.float().sum(0)
        ctx.save_for_backward(*(g for g in [grad_h, *grad_w, *grad_b] if g is not None))
        ctx.layout = (need_h, need_w, need_b, [b.dtype if b is not None else None for b in biases])
        ctx.mark_non_differentiable(correct)
        return loss_sum, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):
        # the stored gradients are of loss_sum: scale them in place (a copy
        # would double the weight-gradient memory; backward runs once per graph)
        saved = iter(ctx.saved_tensors)
        need_h, need_w, need_b, bias_dtypes = ctx.layout
        grad_h = next(saved).mul_(grad_loss) if need_h else None
        grads = [grad_h, None, None, None]
        grads_w = [next(saved).mul_(grad_loss) if need else None for need in need_w]
        grads_b = [next(saved).mul_(grad_loss).to(dt) if need else None for need, dt in zip(need_b, bias_dtypes)]
        for gw, gb in zip(grads_w, grads_b):
            grads += [gw, gb]
        return tuple(grads)


def chunked_cross_entropy(hidden: torch.Tensor, targets: torch.Tensor, heads: Sequence[Head],
                          chunk_size: int = 256):
    """Sum of CE and number of correct argmax predictions over rows of `hidden`.

    hidden (N, H) and targets (N,) hold only counted positions (no IGNORE_ID).
    Returns (loss_sum, correct) as 0-d tensors; loss_sum is differentiable.
    """
    flat = []
    for w, b in heads:
        flat += [w, b]
    return _LinearCrossEntropy.apply(hidden, targets, chunk_size, torch.is_grad_enabled(), *flat)


def shifted_loss(hidden: torch.Tensor, target: torch.Tensor, heads: Sequence[Head],
                 chunk_size: Optional[int] = 256):
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
