"""Channels-last ("time-major") convolutions for the reduced-precision path.

oneDNN runs bf16 convolutions in a channels-last layout. Fed PyTorch's default (B, C, T) tensors it converts
every input and output with a strided transpose, which costs more than the convolution itself at HiFT's
55k-sample resolution (5x on this CPU). In bf16/fp16 the estimator and the vocoder therefore carry
activations as (B, C, 1, T) tensors in `torch.channels_last` memory (time-major, channel fastest) and call
the 2-D kernels; the values are those of the 1-D modules (same kernels, no reordering of sums). float32
keeps the plain (B, C, T) path, the one checked bit-identical against upstream.

Each helper takes a 3-D tensor (plain path: the module itself runs) or a 4-D channels-last one.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

CL = torch.channels_last


def wants_channels_last(weight: torch.Tensor) -> bool:
    return weight.dtype in (torch.bfloat16, torch.float16)


def to_cl(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T) -> (B, C, 1, T) channels-last."""
    return x.unsqueeze(2).contiguous(memory_format=CL)


def from_cl(x: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, T) -> (B, C, T) (a view; contiguous in time-major order)."""
    return x.squeeze(2)


def time_major(x: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, T) channels-last -> (B, T, C) contiguous view (the transformer layout)."""
    return x.squeeze(2).transpose(1, 2)


def from_time_major(x: torch.Tensor) -> torch.Tensor:
    """(B, T, C) contiguous -> (B, C, 1, T) channels-last view."""
    return x.transpose(1, 2).unsqueeze(2)


def conv(m: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3:
        return m(x)
    if m.kernel_size[0] == 1 and m.stride[0] == 1 and m.padding[0] == 0 and m.groups == 1:
        # a pointwise conv is a matmul over channels; oneDNN's 1x1 channels-last conv is several times slower
        return from_time_major(F.linear(time_major(x), m.weight.squeeze(-1), m.bias))
    return F.conv2d(x, m.weight.unsqueeze(2), m.bias, (1, m.stride[0]), (0, m.padding[0]), (1, m.dilation[0]),
                    m.groups)


def conv_transpose(m: nn.ConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    """ConvTranspose1d; on the channels-last path as a polyphase conv (kernel = taps x stride).

    Output sample S*q + r - P gathers `taps` input frames through kernel taps r, r + S, ...: one ordinary
    convolution with S * C_out channels ordered (r, c), whose channels-last output read as (B, T', S, C_out)
    is already the interleaved waveform. oneDNN's own transposed conv is ~20x slower here at HiFT's last
    upsampling layer."""
    if x.dim() == 3:
        return m(x)
    (stride,), (kernel,), (pad,) = m.stride, m.kernel_size, m.padding
    if kernel % stride or m.groups != 1 or m.dilation[0] != 1 or m.output_padding[0]:
        return F.conv_transpose2d(x, m.weight.unsqueeze(2), m.bias, (1, stride), (0, pad),
                                  (0, m.output_padding[0]), m.groups, (1, m.dilation[0]))
    c_in, c_out, _ = m.weight.shape
    taps = kernel // stride
    w = m.weight.view(c_in, c_out, taps, stride).flip(2).permute(3, 1, 0, 2).reshape(stride * c_out, c_in, 1, taps)
    bias = None if m.bias is None else m.bias.repeat(stride)
    z = F.conv2d(x, w, bias, padding=(0, taps - 1))                     # (B, S*C_out, 1, T + taps - 1)
    b, _, _, frames = z.shape
    out_len = (x.shape[-1] - 1) * stride - 2 * pad + kernel
    y = z.permute(0, 2, 3, 1).reshape(b, 1, frames * stride, c_out)[:, :, pad:pad + out_len]
    return y.permute(0, 3, 1, 2)
