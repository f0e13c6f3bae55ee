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
