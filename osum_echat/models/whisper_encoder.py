"""Whisper-style speech encoder (the WeNet layout upstream OSUM-EChat trains).

Module and parameter names follow upstream's WeNet `TransformerEncoder` so
released checkpoints load key for key:

    embed.conv.{0,2}      two Conv1d (k=3), the second with stride 2
    embed.pos_enc.pe      sinusoid table, sliced to the input length
    encoders.N.{self_attn.linear_{q,k,v,out}, feed_forward.w_{1,2}, norm1, norm2}
    after_norm            final LayerNorm (pre-LN blocks)

The same block stack, with a Linear+LayerNorm front end instead of the convs,
is the adapter transformer (see adapter.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as ckpt
from torch import nn


class ErfGELU(nn.Module):
    """Exact GELU, 0.5 * x * (1 + erf(x / sqrt 2)), as upstream's encoder uses."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="none")


ACTIVATIONS = {"gelu": ErfGELU, "relu": nn.ReLU, "swish": nn.SiLU, "tanh": nn.Tanh}


def whisper_sinusoids(length: int, dim: int) -> torch.Tensor:
    """openai-whisper's table: [sin | cos] halves, timescales up to 10000."""
    step = math.log(10000) / (dim // 2 - 1)
    inv = torch.exp(-step * torch.arange(dim // 2, dtype=torch.float32))
    angle = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


def interleaved_sinusoids(length: int, dim: int) -> torch.Tensor:
    """Transformer table: sin on even channels, cos on odd channels."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe


class PositionalEncoding(nn.Module):
    """Adds pe[:T] to x * scale, then dropout. `pe` is a persistent buffer
    because released checkpoints store it (and loading overwrites it)."""

    def __init__(self, table: torch.Tensor, scale: float, dropout: float):
        super().__init__()
        self.register_buffer("pe", table.unsqueeze(0))
        self.scale = scale
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(1) > self.pe.size(1):
            raise ValueError(f"input of {x.size(1)} frames exceeds the positional table "
                             f"({self.pe.size(1)} frames); cut the audio shorter")
        return self.dropout(x * self.scale + self.pe[:, : x.size(1)].to(x.dtype))


class WhisperConvFrontEnd(nn.Module):
    """Two Conv1d+GELU (second stride 2), then Whisper sinusoids (no scaling)."""

    def __init__(self, idim: int, odim: int, dropout: float, max_len: int = 30000):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(idim, odim, kernel_size=3, padding=1), ErfGELU(),
            nn.Conv1d(odim, odim, kernel_size=3, stride=2, padding=1), ErfGELU(),
        )
        self.pos_enc = PositionalEncoding(whisper_sinusoids(max_len, odim), 1.0, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        time = x.size(1)
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)
        # upstream quirk: the mask is sliced from index 1 when the batch's
        # longest input is even and from 0 when it is odd, so an odd-length
        # item in a batch whose longest item is even loses its last frame.
        return self.pos_enc(x), mask[:, (time + 1) % 2::2]


class LinearFrontEnd(nn.Module):
    """Linear + LayerNorm + dropout, then scaled interleaved sinusoids."""

    def __init__(self, idim: int, odim: int, dropout: float, max_len: int = 5000):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(idim, odim), nn.LayerNorm(odim, eps=1e-5), nn.Dropout(dropout))
        self.pos_enc = PositionalEncoding(interleaved_sinusoids(max_len, odim), math.sqrt(odim), dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        return self.pos_enc(self.out(x)), mask


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, key_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim, bias=key_bias)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, -1).transpose(1, 2)

    def _qkv(self, x: torch.Tensor) -> tuple:
        """q, k, v from one matmul over the stacked weights: on CPU (MKL) the same values, bit for bit,
        as three (each output is the same dot product), ~13% less time at 1,500 frames. Modules that
        something else wraps or replaces (adapters, hooks) keep their own three calls."""
        lins = (self.linear_q, self.linear_k, self.linear_v)
        if any(type(m) is not nn.Linear or m._forward_hooks or m._forward_pre_hooks for m in lins):
            return tuple(m(x) for m in lins)
        bias_k = self.linear_k.bias if self.linear_k.bias is not None else torch.zeros_like(self.linear_q.bias)
        weight = torch.cat([m.weight for m in lins])
        return F.linear(x, weight, torch.cat([self.linear_q.bias, bias_k, self.linear_v.bias])).chunk(3, dim=-1)

    def forward(self, x: torch.Tensor, key_mask) -> torch.Tensor:
        """key_mask: (B, T) bool, True where the frame is real; None when all are."""
        q, k, v = (self._split(t) for t in self._qkv(x))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if key_mask is None else key_mask[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0)
        return self.linear_out(out.transpose(1, 2).reshape(x.shape))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float, activation: nn.Module):
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.activation = activation
        self.dropout = nn.Dropout(dropout)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(self.activation(self.w_1(x))))


class EncoderBlock(nn.Module):
    def __init__(self, dim, heads, ffn_dim, dropout, attention_dropout, activation,
                 key_bias, normalize_before=True):
        super().__init__()
        self.self_attn = SelfAttention(dim, heads, attention_dropout, key_bias)
        self.feed_forward = FeedForward(dim, ffn_dim, dropout, activation)
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        pre = self.normalize_before
        h = self.self_attn(self.norm1(x) if pre else x, key_mask)
        x = _residual(x, self.dropout(h))
        if not pre:
            x = self.norm1(x)
        h = self.feed_forward(self.norm2(x) if pre else x)
        x = _residual(x, self.dropout(h))
        return x if pre else self.norm2(x)


def _residual(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """x + h; without autograd into h's fresh buffer (no new allocation: at 1,500 frames a new
    6 MB buffer per add costs more in page faults than the add itself). Same values either way."""
    if torch.is_grad_enabled() or h.data_ptr() == x.data_ptr():
        return x + h
    return h.add_(x)


class TransformerEncoder(nn.Module):
    """front end -> N blocks -> final LayerNorm (when pre-LN)."""

    def __init__(self, front_end: nn.Module, dim: int, heads: int, ffn_dim: int, num_blocks: int,
                 dropout: float = 0.1, attention_dropout: float = 0.0, activation: str = "relu",
                 key_bias: bool = True, normalize_before: bool = True,
                 gradient_checkpointing: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"encoder output_size {dim} is not divisible by attention_heads {heads}")
        self.embed = front_end
        self.after_norm = nn.LayerNorm(dim, eps=1e-5)
        self.encoders = nn.ModuleList(
            EncoderBlock(dim, heads, ffn_dim, dropout, attention_dropout, ACTIVATIONS[activation](),
                         key_bias, normalize_before)
            for _ in range(num_blocks))
        self.normalize_before = normalize_before
        self.gradient_checkpointing = gradient_checkpointing
        self.output_size = dim

    def forward(self, xs: torch.Tensor, xs_lens: torch.Tensor):
        """xs (B, T, D), xs_lens (B,) -> (B, T', dim) and valid mask (B, T')."""
        mask = torch.arange(xs.size(1), device=xs.device)[None, :] < xs_lens.to(xs.device)[:, None]
        xs, mask = self.embed(xs, mask)
        key_mask = None if bool(mask.all()) else mask  # unmasked attention has faster kernels
        for block in self.encoders:
            if self.gradient_checkpointing and self.training:
                xs = ckpt.checkpoint(block, xs, key_mask, use_reentrant=False)
            else:
                xs = block(xs, key_mask)
        if self.normalize_before:
            xs = self.after_norm(xs)
        return xs, mask


def build_whisper_encoder(input_dim: int, conf: dict) -> TransformerEncoder:
    """Encoder from upstream's `encoder_conf` (input_layer conv1d2, abs_pos_whisper)."""
    if conf.get("input_layer", "conv1d2") != "conv1d2":
        raise ValueError(f"encoder_conf.input_layer={conf['input_layer']!r}: only 'conv1d2' (Whisper) is supported")
    if conf.get("pos_enc_layer_type", "abs_pos_whisper") != "abs_pos_whisper":
        raise ValueError("encoder_conf.pos_enc_layer_type must be 'abs_pos_whisper'")
    if conf.get("use_dynamic_chunk") or conf.get("static_chunk_size", -1) > 0:
        raise ValueError("chunked (streaming) encoder masks are not supported; "
                         "set use_dynamic_chunk: false and static_chunk_size: -1")
    dim = conf["output_size"]
    dropout = conf.get("dropout_rate", 0.1)
    front = WhisperConvFrontEnd(input_dim, dim, conf.get("positional_dropout_rate", 0.1))
    return TransformerEncoder(
        front, dim, conf["attention_heads"], conf["linear_units"], conf["num_blocks"],
        dropout=dropout, attention_dropout=conf.get("attention_dropout_rate", 0.0),
        activation=conf.get("activation_type", "gelu"), key_bias=conf.get("key_bias", False),
        normalize_before=conf.get("normalize_before", True),
        gradient_checkpointing=conf.get("gradient_checkpointing", False))


# openai-whisper state-dict names -> ours (encoder part of e.g. medium.pt)
_WHISPER_BLOCK_NAMES = {
    "attn.query": "self_attn.linear_q", "attn.key": "self_attn.linear_k",
    "attn.value": "self_attn.linear_v", "attn.out": "self_attn.linear_out",
    "attn_ln": "norm1", "mlp.0": "feed_forward.w_1", "mlp.2": "feed_forward.w_2", "mlp_ln": "norm2",
}
_WHISPER_TOP_NAMES = {"conv1": "embed.conv.0", "conv2": "embed.conv.2", "ln_post": "after_norm"}


def whisper_to_encoder_state(whisper_state: dict) -> dict:
    """Map an openai-whisper model_state_dict to encoder state-dict names.

    Decoder entries are dropped; `encoder.positional_embedding` is checked,
    not copied (our table is the same formula, only longer).
    """
    out = {}
    for name, value in whisper_state.items():
        if not name.startswith("encoder."):
            continue
        rest = name[len("encoder."):]
        if rest == "positional_embedding":
            continue
        head, _, leaf = rest.rpartition(".")
        if head.startswith("blocks."):
            _, index, sub = head.split(".", 2)
            if sub not in _WHISPER_BLOCK_NAMES:
                raise KeyError(f"unknown whisper encoder entry {name!r}")
            out[f"encoders.{index}.{_WHISPER_BLOCK_NAMES[sub]}.{leaf}"] = value
        elif head in _WHISPER_TOP_NAMES:
            out[f"{_WHISPER_TOP_NAMES[head]}.{leaf}"] = value
        else:
            raise KeyError(f"unknown whisper encoder entry {name!r}")
    return out


def load_whisper_weights(encoder: TransformerEncoder, path: str) -> None:
    """Initialise `encoder` from an openai-whisper checkpoint file (e.g. medium.pt)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if "model_state_dict" not in blob:
        raise ValueError(f"{path}: not an openai-whisper checkpoint (no 'model_state_dict')")
    state = whisper_to_encoder_state(blob["model_state_dict"])
    pos = blob["model_state_dict"].get("encoder.positional_embedding")
    if pos is not None:
        ours = encoder.embed.pos_enc.pe[0, : pos.size(0)].float()
        if pos.shape != ours.shape or not torch.allclose(pos.float(), ours, atol=1e-4):
            raise ValueError(f"{path}: positional embedding differs from the Whisper sinusoids")
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("pos_enc.pe")]
    if missing or unexpected:
        raise ValueError(f"{path}: whisper weights do not fit encoder_conf; "
                         f"missing {missing[:5]}..., unexpected {unexpected[:5]}...")
