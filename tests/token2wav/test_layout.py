"""The reduced-precision (channels-last) path: same convolutions as the 1-D modules, bf16 close to fp32."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from osum_echat.bin.token2wav import random_token2wav
from osum_echat.token2wav.config import tiny_config
from osum_echat.token2wav.estimator import Mish
from osum_echat.token2wav.layout import CL, conv, conv_transpose, from_cl, to_cl
from osum_echat.token2wav.token2wav import Token2Wav


@pytest.mark.parametrize("c_in,c_out,kernel,stride,pad,frames", [
    (8, 6, 16, 8, 4, 13),    # HiFT's upsampling layers
    (5, 5, 4, 2, 1, 9),      # the estimator's Upsample1D
    (4, 3, 6, 3, 0, 1),      # no padding, one frame
])
def test_polyphase_transposed_conv_equals_conv_transpose1d(c_in, c_out, kernel, stride, pad, frames):
    torch.manual_seed(0)
    m = nn.ConvTranspose1d(c_in, c_out, kernel, stride, pad)
    x = torch.randn(2, c_in, frames)
    with torch.no_grad():
        want = m(x)
        got = conv_transpose(m, to_cl(x))
    assert got.shape == (2, c_out, 1, want.shape[-1])
    torch.testing.assert_close(from_cl(got), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel,stride,dilation", [(7, 1, 1), (11, 1, 3), (3, 2, 1), (1, 1, 1)])
def test_channels_last_conv_equals_conv1d(kernel, stride, dilation):
    torch.manual_seed(0)
    m = nn.Conv1d(6, 5, kernel, stride, padding=dilation * (kernel - 1) // 2, dilation=dilation)
    x = torch.randn(2, 6, 40)
    with torch.no_grad():
        got = conv(m, to_cl(x))
        torch.testing.assert_close(from_cl(got), m(x), rtol=1e-5, atol=1e-6)
    assert got.is_contiguous(memory_format=CL)


def test_mish_below_float32_matches_the_kernel():
    x = torch.linspace(-30, 30, 2001)
    want = nn.functional.mish(x.double())
    for dtype in (torch.bfloat16, torch.float16):
        got = Mish()(x.to(dtype)).double()
        torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2)
        assert (got - want).abs().max() <= (nn.functional.mish(x.to(dtype)).double() - want).abs().max() + 1e-6
    assert torch.equal(Mish()(x), nn.functional.mish(x))


def test_bf16_synthesis_is_close_to_float32_and_float32_is_untouched():
    """bf16 runs the channels-last path end to end (flow, vocoder, streaming); fp32 stays the reference path."""
    cfg = tiny_config()
    torch.manual_seed(0)
    flow, hift = random_token2wav(cfg, seed=0)
    t32 = Token2Wav(cfg, flow, hift)
    t16 = Token2Wav(cfg, copy.deepcopy(flow).to(torch.bfloat16), copy.deepcopy(hift).to(torch.bfloat16))
    ids = torch.randint(0, 4096, (60,), generator=torch.Generator().manual_seed(3)).tolist()
    wav32, mel32 = t32.synthesize(ids, noise=False, return_mel=True)
    wav16, mel16 = t16.synthesize(ids, noise=False, return_mel=True)
    assert wav16.dtype == torch.float32 and wav16.shape == wav32.shape
    assert (mel16 - mel32).abs().mean() < 0.1 * mel32.abs().mean()
    assert (wav16 - wav32).abs().mean() < 0.1 * wav32.abs().mean()
    streamed = torch.cat(list(t16.stream(iter(ids), noise=False)))
    assert streamed.shape == wav16.shape and torch.isfinite(streamed).all()
