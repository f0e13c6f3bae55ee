"""The flow's token encoder: a WeNet/ESPnet Conformer with relative-position self-attention (no conv module,
no macaron), full attention over prompt + tokens. Module names match `flow.pt` (`encoder.*`)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from osum_echat.token2wav.config import EncoderConfig


class EspnetRelPositionalEncoding(nn.Module):
    """Sinusoidal table over relative positions T-1 .. -(T-1) (positive part flipped first), computed like
    upstream (a 5000-long table sliced at the centre) so the values are bit-identical."""

    def __init__(self, d_model: int, max_len: int = 5000):
        super().__init__()
        self.d_model = d_model
        self.xscale = math.sqrt(d_model)
        self.max_len = max_len
        self._pe: torch.Tensor | None = None

    def _table(self, size: int, like: torch.Tensor) -> torch.Tensor:
        pe = self._pe
        if pe is None or pe.size(1) < 2 * size - 1:
            n = max(self.max_len, size)
            position = torch.arange(0, n, dtype=torch.float32).unsqueeze(1)
            div_term = torch.exp(torch.arange(0, self.d_model, 2, dtype=torch.float32)
                                 * -(math.log(10000.0) / self.d_model))
            pos = torch.zeros(n, self.d_model)
            neg = torch.zeros(n, self.d_model)
            pos[:, 0::2] = torch.sin(position * div_term)
            pos[:, 1::2] = torch.cos(position * div_term)
            neg[:, 0::2] = torch.sin(-1 * position * div_term)
            neg[:, 1::2] = torch.cos(-1 * position * div_term)
            pe = torch.cat([torch.flip(pos, [0]).unsqueeze(0), neg[1:].unsqueeze(0)], dim=1)
        if pe.device != like.device or pe.dtype != like.dtype:
            pe = pe.to(device=like.device, dtype=like.dtype)
        self._pe = pe
        centre = pe.size(1) // 2
        return pe[:, centre - size + 1: centre + size]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * self.xscale, self._table(x.size(1), x)


class LinearNoSubsampling(nn.Module):
    def __init__(self, idim: int, odim: int):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(idim, odim), nn.LayerNorm(odim, eps=1e-5), nn.Dropout(0.0))
        self.pos_enc = EspnetRelPositionalEncoding(odim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pos_enc(self.out(x))


class RelPositionMultiHeadedAttention(nn.Module):
    def __init__(self, n_head: int, n_feat: int):
        super().__init__()
        self.d_k = n_feat // n_head
        self.h = n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(n_head, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.empty(n_head, self.d_k))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)

    @staticmethod
    def rel_shift(x: torch.Tensor) -> torch.Tensor:
        """(B, H, T, 2T-1) scores per relative offset -> (B, H, T, T) per key (Transformer-XL shift)."""
        b, h, t1, n = x.shape
        padded = torch.cat([x.new_zeros(b, h, t1, 1), x], dim=-1).view(b, h, n + 1, t1)
        return padded[:, :, 1:].view_as(x)[:, :, :, : n // 2 + 1]

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, key_pad: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.linear_q(x).view(b, t, self.h, self.d_k)
        k = self.linear_k(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos_emb).view(pos_emb.size(0), -1, self.h, self.d_k).transpose(1, 2)
        ac = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        bd = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))
        if ac.shape != bd.shape:
            bd = self.rel_shift(bd)
        scores = (ac + bd) / math.sqrt(self.d_k)
        if key_pad is not None:  # (B, 1, 1, T) True on padded keys
            scores = scores.masked_fill(key_pad, -float("inf"))
            attn = torch.softmax(scores, dim=-1).masked_fill(key_pad, 0.0)
        else:
            attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).contiguous().view(b, t, self.h * self.d_k)
        return self.linear_out(out)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, idim: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(idim, hidden)
        self.activation = nn.SiLU()
        self.w_2 = nn.Linear(hidden, idim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.activation(self.w_1(x)))


class ConformerEncoderLayer(nn.Module):
    """Pre-norm: x + MHA(norm_mha(x)); x + FF(norm_ff(x)). LayerNorm eps 1e-12 as upstream."""

    def __init__(self, size: int, heads: int, linear_units: int):
        super().__init__()
        self.self_attn = RelPositionMultiHeadedAttention(heads, size)
        self.feed_forward = PositionwiseFeedForward(size, linear_units)
        self.norm_ff = nn.LayerNorm(size, eps=1e-12)
        self.norm_mha = nn.LayerNorm(size, eps=1e-12)

    def forward(self, x, pos_emb, key_pad):
        x = x + self.self_attn(self.norm_mha(x), pos_emb, key_pad)
        return x + self.feed_forward(self.norm_ff(x))


class ConformerEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self._output_size = cfg.output_size
        self.embed = LinearNoSubsampling(cfg.input_size, cfg.output_size)
        self.encoders = nn.ModuleList(
            ConformerEncoderLayer(cfg.output_size, cfg.attention_heads, cfg.linear_units)
            for _ in range(cfg.num_blocks))
        self.after_norm = nn.LayerNorm(cfg.output_size, eps=1e-5)

    def output_size(self) -> int:
        return self._output_size

    def forward(self, xs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """xs (B, T, D) -> (B, T, D_out). `lengths` only matters for padded batches."""
        key_pad = None
        if lengths is not None and bool((lengths < xs.size(1)).any()):
            pad = torch.arange(xs.size(1), device=xs.device)[None] >= lengths[:, None]
            key_pad = pad[:, None, None, :]
        xs, pos_emb = self.embed(xs)
        for layer in self.encoders:
            xs = layer(xs, pos_emb, key_pad)
        return self.after_norm(xs)
