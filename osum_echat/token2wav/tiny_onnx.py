"""Tiny, randomly initialised stand-ins for campplus.onnx and speech_tokenizer_v1.onnx.

Exported by the project with torch.onnx.export under the released files'
input/output names, element types, ranks and dynamic axes (onnx_models.py), so
the front-end and the extraction tool run their real code paths in tests and in
the demo. The tokenizer keeps the released model's shape rules: two stride-2
convolutions (100 mel frames/s -> 25 tokens/s), padding masked by
`feats_length` (so a padded batch gives each item's own tokens), a
nearest-codeword search over 4096 L2-normalised codes.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .onnx_models import CAMPPLUS, SPEECH_TOKENIZER

CODEBOOK_SIZE = 4096
OPSET = 17


class TinyCampPlus(nn.Module):
    """(batch, frames, 80) fbank -> (batch, 192) embedding: a projection, mean over time, a projection."""

    def __init__(self, hidden: int = 32, dim: int = 192):
        super().__init__()
        self.proj = nn.Linear(80, hidden)
        self.out = nn.Linear(hidden, dim)

    def forward(self, feats):
        return self.out(torch.relu(self.proj(feats)).mean(dim=1))


class TinySpeechTokenizer(nn.Module):
    """(batch, 128, frames) log-mel + lengths -> (batch, 1, tokens) codes."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.conv1 = nn.Conv1d(128, hidden, 3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(hidden, hidden, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.register_buffer("codebook", F.normalize(torch.randn(CODEBOOK_SIZE, hidden), dim=-1))

    @staticmethod
    def _mask(x, lengths):
        keep = torch.arange(x.size(-1), device=x.device)[None, :] < lengths[:, None]
        return x * keep[:, None, :].to(x.dtype), keep

    def forward(self, feats, feats_length):
        lengths = feats_length.to(torch.int64)
        x, _ = self._mask(feats, lengths)
        lengths = (lengths - 1) // 2 + 1
        x, _ = self._mask(F.gelu(self.conv1(x)), lengths)
        lengths = (lengths - 1) // 2 + 1
        x, keep = self._mask(F.gelu(self.conv2(x)), lengths)
        x = x.transpose(1, 2)
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        scores = (q @ k.transpose(1, 2)) * q.size(-1) ** -0.5
        scores = scores.masked_fill(~keep[:, None, :], float("-inf"))
        x = x + scores.softmax(dim=-1) @ v  # one head, padded keys masked
        # centre over the valid frames so random weights still give varied codes
        weight = keep[:, :, None].to(x.dtype)
        x = x - (x * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True).clamp(min=1)
        x = F.normalize(x, dim=-1)
        dist = (x * x).sum(-1, keepdim=True) - 2 * x @ self.codebook.T + (self.codebook ** 2).sum(-1)
        return (-dist).argmax(dim=-1).unsqueeze(1)


def _export(module: nn.Module, args: tuple, path: Path, signature, dynamic_axes: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=[s.name for s in signature.inputs],
                          output_names=[s.name for s in signature.outputs], dynamic_axes=dynamic_axes)


def write_tiny_onnx(model_dir, seed: int = 0) -> dict:
    """Write tiny campplus.onnx and speech_tokenizer_v1.onnx into model_dir -> {file name: path}."""
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        campplus, tokenizer = TinyCampPlus(), TinySpeechTokenizer()
    finally:
        torch.random.set_rng_state(state)
    paths = {CAMPPLUS.file: out / CAMPPLUS.file, SPEECH_TOKENIZER.file: out / SPEECH_TOKENIZER.file}
    _export(campplus, (torch.randn(1, 50, 80),), paths[CAMPPLUS.file], CAMPPLUS,
            {"input": {0: "batch", 1: "frames"}, "output": {0: "batch"}})
    _export(tokenizer, (torch.randn(2, 128, 60), torch.tensor([60, 37], dtype=torch.int32)),
            paths[SPEECH_TOKENIZER.file], SPEECH_TOKENIZER,
            {"feats": {0: "batch", 2: "frames"}, "feats_length": {0: "batch"}, "indices": {0: "batch", 2: "tokens"}})
    return paths
