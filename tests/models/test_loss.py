"""Chunked cross-entropy equals the plain full-logits computation."""
import pytest
import torch

from osum_echat.models.loss import IGNORE_ID, shifted_loss


def _setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 40, 16, generator=g, requires_grad=True)
    text_w = torch.randn(50, 16, generator=g, requires_grad=True)
    speech_w = torch.randn(11, 16, generator=g, requires_grad=True)
    speech_b = torch.randn(11, generator=g, requires_grad=True)
    target = torch.randint(0, 61, (3, 40), generator=g)
    target[torch.rand(3, 40, generator=g) < 0.4] = IGNORE_ID
    return hidden, [(text_w, None), (speech_w, speech_b)], target


@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_chunked_equals_naive_loss_and_gradients(chunk):
    hidden, heads, target = _setup()
    params = [hidden] + [t for h in heads for t in h if t is not None]
    naive = shifted_loss(hidden, target, heads, chunk_size=None)
    naive_grads = torch.autograd.grad(naive["loss"], params)
    chunked = shifted_loss(hidden, target, heads, chunk_size=chunk)
    grads = torch.autograd.grad(chunked["loss"], params)
    # reference written independently: CE over the shifted, non-ignored positions
    logits = torch.cat([hidden @ heads[0][0].T, hidden @ heads[1][0].T + heads[1][1]], -1)
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 61), target[:, 1:].reshape(-1))
    torch.testing.assert_close(chunked["loss"], ref)
    torch.testing.assert_close(chunked["loss"], naive["loss"])
    assert chunked["num_tokens"] == naive["num_tokens"] == int((target[:, 1:] != IGNORE_ID).sum())
    torch.testing.assert_close(chunked["acc"], naive["acc"])
    for a, b in zip(grads, naive_grads):
        torch.testing.assert_close(a, b)


def test_accuracy_counts_correct_predictions():
    hidden = torch.eye(4)[None]  # position t is one-hot t
    weight = torch.eye(4) * 10  # so position t predicts class t
    target = torch.tensor([[IGNORE_ID, 0, 2, 2]])  # predicted 0, 1, 2 at positions 0..2
    out = shifted_loss(hidden, target, [(weight, None)], chunk_size=2)
    assert out["num_tokens"] == 3
    assert abs(float(out["acc"]) - 2 / 3) < 1e-6


def test_frozen_head_and_no_grad():
    hidden, heads, target = _setup(1)
    heads[0][0].requires_grad_(False)  # e.g. a frozen LLM with a trained speech head
    out = shifted_loss(hidden, target, heads, chunk_size=5)
    out["loss"].backward()
    assert heads[0][0].grad is None and heads[1][0].grad is not None and hidden.grad is not None
    with torch.no_grad():
        again = shifted_loss(hidden, target, heads, chunk_size=5)
    assert not again["loss"].requires_grad
    torch.testing.assert_close(again["loss"], out["loss"].detach())


def test_bfloat16_close_to_float32():
    hidden, heads, target = _setup(2)
    ref = shifted_loss(hidden, target, heads, chunk_size=None)
    grads_ref = torch.autograd.grad(ref["loss"], [hidden, heads[0][0]])
    h16 = hidden.detach().bfloat16().requires_grad_()
    w16 = heads[0][0].detach().bfloat16().requires_grad_()
    heads16 = [(w16, None), (heads[1][0].detach().bfloat16(), heads[1][1].detach().bfloat16())]
    out = shifted_loss(h16, target, heads16, chunk_size=8)
    out["loss"].backward()
    assert h16.grad.dtype == torch.bfloat16 and w16.grad.dtype == torch.bfloat16
    torch.testing.assert_close(out["loss"], ref["loss"], rtol=2e-2, atol=0)
    torch.testing.assert_close(h16.grad.float(), grads_ref[0], rtol=0.1, atol=2e-3)
    torch.testing.assert_close(w16.grad.float(), grads_ref[1], rtol=0.1, atol=2e-3)
