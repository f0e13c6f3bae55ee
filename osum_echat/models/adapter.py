"""Adapter between the speech encoder and the LLM.

`adapter_type: osum_echat` (the released model): a causal Conv1d downsampler
(`down_sample_2`), a fixed 4-block transformer (`speech_transformer`) and a
Linear to the LLM width (`speech_llama_proj`). `adapter_type: osum_echat2`:
one Conv1d+BatchNorm stack that projects straight to the LLM width.
The attribute names above are upstream's and live on the top-level model.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from osum_echat.models.whisper_encoder import ErfGELU, LinearFrontEnd, TransformerEncoder

# upstream quirk: the adapter transformer is fixed, whatever encoder_conf says
ADAPTER_HEADS = 4
ADAPTER_FFN = 2560
ADAPTER_BLOCKS = 4


class CausalConvDownsampler(nn.Module):
    """Left-padded Conv1d(k=3)+GELU stack: one stride-1 conv, then log2(rate)
    stride-2 convs. At rate 4 this is upstream's module (keys conv.1/4/7).

    Upstream's rate-2 and rate-8 modules were unpadded and could not take the
    mask the model passes; here every rate is the same causal design."""

    def __init__(self, dim: int, rate: int):
        super().__init__()
        if rate not in (2, 4, 8):
            raise ValueError(f"downsample_rate {rate}: expected 1, 2, 4 or 8")
        self.num_halvings = int(math.log2(rate))
        layers = []
        for stride in [1] + [2] * self.num_halvings:
            layers += [nn.ConstantPad1d((2, 0), 0.0), nn.Conv1d(dim, dim, 3, stride), ErfGELU()]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)
        for _ in range(self.num_halvings):
            mask = mask[:, 0::2]
        return x, mask


class IdentityDownsampler(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        return x, mask


class BatchNormDownsampler(nn.Module):
    """`osum_echat2`: causal conv(s) with BatchNorm and ReLU/GELU, stride 2
    overall, then a Linear to the LLM width."""

    def __init__(self, enc_dim: int, llm_dim: int, kernel_size: int = 5):
        super().__init__()
        self.two_convs = enc_dim * 4 < llm_dim
        width = enc_dim
        if self.two_convs:
            self.left_padding1 = nn.ConstantPad1d((kernel_size - 1, 0), 0.0)
            self.conv1d1 = nn.Conv1d(enc_dim, 2 * enc_dim, kernel_size, 1, 0)
            self.bn1 = nn.BatchNorm1d(2 * enc_dim, eps=1e-3, momentum=0.99)
            self.relu1 = nn.ReLU()
            width = 2 * enc_dim
        self.left_padding2 = nn.ConstantPad1d((kernel_size - 1, 0), 0.0)
        self.conv1d2 = nn.Conv1d(width, 2 * width, kernel_size, 2, 0)
        self.bn2 = nn.BatchNorm1d(2 * width, eps=1e-3, momentum=0.99)
        self.relu2 = nn.ReLU()
        self.project = nn.Linear(2 * width, llm_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        x = x.masked_fill(~mask[:, :, None], 0.0).transpose(1, 2)
        if self.two_convs:
            x = self.relu1(self.bn1(self.conv1d1(self.left_padding1(x))))
        x = self.relu2(self.bn2(self.conv1d2(self.left_padding2(x))))
        return self.project(x.transpose(1, 2)), mask[:, 0::2]


def build_downsampler(rate: int, dim: int) -> nn.Module:
    return IdentityDownsampler() if rate == 1 else CausalConvDownsampler(dim, rate)


def build_adapter_transformer(dim: int) -> TransformerEncoder:
    """Upstream's `speech_transformer`: Linear front end, abs positions
    (scaled by sqrt(dim)), 4 pre-LN blocks, 4 heads, FFN 2560, ReLU, key bias."""
    front = LinearFrontEnd(dim, dim, dropout=0.1)
    return TransformerEncoder(front, dim, ADAPTER_HEADS, ADAPTER_FFN, ADAPTER_BLOCKS,
                              dropout=0.1, attention_dropout=0.0, activation="relu",
                              key_bias=True, normalize_before=True)
