"""The CFM velocity estimator: Matcha-TTS's 1-D U-Net (`ConditionalDecoder`) with diffusers-style
transformer blocks. Module names match `flow.pt` (`decoder.estimator.*`).

Inputs are channel-first (B, C, T). `mask` (B, 1, T) may be None for an unpadded batch (the only case
at inference, where upstream's masks are all ones): the masked products are then skipped, which does
not change a value. With bf16/fp16 weights the U-Net runs channels-last inside (layout.py): convolutions
without layout conversions, and the transformer blocks read the same memory as (B, T, C) without a copy.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from osum_echat.token2wav.config import EstimatorConfig
from osum_echat.token2wav.layout import conv, conv_transpose, from_cl, from_time_major, time_major, to_cl, \
    wants_channels_last


def _m(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


def _layer(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return conv(module, x) if isinstance(module, nn.Conv1d) else module(x)


def sinusoidal_time_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Matcha's SinusoidalPosEmb: [sin, cos] of scale * t * exp(-i ln(1e4) / (dim/2 - 1))."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    arg = scale * t.reshape(-1).unsqueeze(1) * freq.unsqueeze(0)
    return torch.cat((arg.sin(), arg.cos()), dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels: int, time_embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class Mish(nn.Mish):
    """nn.Mish. Below float32 it is computed in float32 from one exp (PyTorch's bf16 mish kernel is ~2.5x
    slower): tanh(softplus(x)) = p / (p + 2) with p = n (n + 2), n = e^x; x is clamped at 20, beyond which the
    ratio is 1 in float32. Same accuracy as the bf16 kernel (which also computes in float32)."""

    def forward(self, x):
        if x.dtype == torch.float32:
            return F.mish(x)
        xf = x.float()
        n = torch.clamp(xf, max=20.0).exp_()
        p = (n + 2).mul_(n)
        return p.div_(p + 2).mul_(xf).to(x.dtype)


class Block1D(nn.Module):
    def __init__(self, dim: int, dim_out: int, groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(dim, dim_out, 3, padding=1), nn.GroupNorm(groups, dim_out), Mish())

    def forward(self, x, mask):
        conv1, norm, act = self.block
        return _m(act(norm(conv(conv1, _m(x, mask)))), mask)


class ResnetBlock1D(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_emb_dim: int, groups: int = 8):
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_emb_dim, dim_out))
        self.block1 = Block1D(dim, dim_out, groups)
        self.block2 = Block1D(dim_out, dim_out, groups)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(self, x, mask, time_emb):
        h = self.block1(x, mask)
        t = self.mlp(time_emb)
        h = h + t.view(*t.shape, *([1] * (h.dim() - 2)))
        h = self.block2(h, mask)
        return h + conv(self.res_conv, _m(x, mask))


class Downsample1D(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x):
        return conv(self.conv, x)


class Upsample1D(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, 2, 1)

    def forward(self, x):
        return conv_transpose(self.conv, x)


class Attention(nn.Module):
    """diffusers Attention(query_dim, heads, dim_head, bias=False) self-attention via SDPA."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (f(x).view(b, t, self.heads, -1).transpose(1, 2) for f in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=0.0, is_causal=False)
        return self.to_out[0](out.transpose(1, 2).reshape(b, t, -1))


class GELUProj(nn.Module):
    """diffusers GELU: Linear then exact (erf) GELU; key `proj`."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x):
        return F.gelu(self.proj(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GELUProj(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x):
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nn.Module):
    """Pre-LN self-attention + GELU feed-forward (no cross-attention; the timestep is not used)."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x, bias):
        x = self.attn1(self.norm1(x), bias) + x
        return self.ff(self.norm3(x)) + x


def _attn_bias(mask: torch.Tensor | None, dtype) -> torch.Tensor | None:
    """Key-padding mask (B, 1, T) or (B, 1, 1, T) -> additive bias (B, 1, 1, T), -1e10 on padding, as upstream."""
    if mask is None:
        return None
    mask = mask.reshape(mask.shape[0], 1, mask.shape[-1])
    return ((1.0 - mask.to(dtype)) * -1.0e10).unsqueeze(1)


class ConditionalDecoder(nn.Module):
    def __init__(self, cfg: EstimatorConfig):
        super().__init__()
        channels = tuple(cfg.channels)
        self.in_channels = cfg.in_channels
        time_dim = channels[0] * 4
        self.time_mlp = TimestepEmbedding(cfg.in_channels, time_dim)

        def stage(dim_in, dim_out):
            blocks = nn.ModuleList(BasicTransformerBlock(dim_out, cfg.num_heads, cfg.attention_head_dim)
                                   for _ in range(cfg.n_blocks))
            return ResnetBlock1D(dim_in, dim_out, time_dim), blocks

        self.down_blocks = nn.ModuleList()
        out_ch = cfg.in_channels
        for i, ch in enumerate(channels):
            in_ch, out_ch = out_ch, ch
            last = i == len(channels) - 1
            down = nn.Conv1d(out_ch, out_ch, 3, padding=1) if last else Downsample1D(out_ch)
            self.down_blocks.append(nn.ModuleList([*stage(in_ch, out_ch), down]))
        self.mid_blocks = nn.ModuleList(nn.ModuleList(stage(channels[-1], out_ch))
                                        for _ in range(cfg.num_mid_blocks))
        rev = channels[::-1] + (channels[0],)
        self.up_blocks = nn.ModuleList()
        for i in range(len(rev) - 1):
            last = i == len(rev) - 2
            up = nn.Conv1d(rev[i + 1], rev[i + 1], 3, padding=1) if last else Upsample1D(rev[i + 1])
            self.up_blocks.append(nn.ModuleList([*stage(rev[i] * 2, rev[i + 1]), up]))
        self.final_block = Block1D(rev[-1], rev[-1])
        self.final_proj = nn.Conv1d(rev[-1], cfg.out_channels, 1)

    @staticmethod
    def _transformers(x, blocks, mask):
        bias = _attn_bias(mask, x.dtype)
        if x.dim() == 4:                        # channels-last: (B, T, C) is a view of the same memory
            x = time_major(x)
            for block in blocks:
                x = block(x, bias)
            return from_time_major(x)
        x = x.transpose(1, 2).contiguous()
        for block in blocks:
            x = block(x, bias)
        return x.transpose(1, 2).contiguous()

    def forward(self, x, mask, mu, t, spks, cond):
        """x, mu, cond (B, 80, T); t (B,); spks (B, 80); mask (B, 1, T) or None -> velocity (B, 80, T)."""
        t = self.time_mlp(sinusoidal_time_embedding(t, self.in_channels).to(t.dtype))
        x = torch.cat([x, mu, spks.unsqueeze(-1).expand(-1, -1, x.shape[-1]), cond], dim=1)
        channels_last = wants_channels_last(self.final_proj.weight)
        if channels_last:
            x, mask = to_cl(x), None if mask is None else mask.unsqueeze(2)
        hiddens, masks = [], [mask]
        for resnet, blocks, down in self.down_blocks:
            m = masks[-1]
            x = self._transformers(resnet(x, m, t), blocks, m)
            hiddens.append(x)
            x = _layer(down, _m(x, m))
            masks.append(None if m is None else m[..., ::2])
        masks = masks[:-1]
        m = masks[-1]
        for resnet, blocks in self.mid_blocks:
            x = self._transformers(resnet(x, m, t), blocks, m)
        for resnet, blocks, up in self.up_blocks:
            m = masks.pop()
            skip = hiddens.pop()
            x = torch.cat([x[..., :skip.shape[-1]], skip], dim=1)
            x = self._transformers(resnet(x, m, t), blocks, m)
            x = _layer(up, _m(x, m))
        x = self.final_block(x, m)
        x = _m(conv(self.final_proj, _m(x, m)), mask)
        return from_cl(x) if channels_last else x
