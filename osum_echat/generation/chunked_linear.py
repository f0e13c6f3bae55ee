"""Faster float32 CPU matmuls for the few rows of a batched decode step.

Measured with MKL (torch 2.13, AVX-512, one thread): `F.linear` with 4..15 input rows is far from
both the memory-bound time of one row and the compute rate of many rows - with 8 rows the 0.5B
model's 151,936-way text head takes ~3x its one-row time, its MLP ~2.5x. Splitting the weight into
blocks of output rows that fit the core's L2 (about 512 KiB each) and multiplying block by block
brings that to ~1.6x and ~2x, and gives bit-identical results (each output is the same dot
product; only the order of the blocks changes). `bench/bench_decode.py` prints the rates.
Only on one thread: with more, every block is a parallel region of its own (thousands per step,
each ending in a barrier, ruinous on a busy machine), and MKL's split of the work changes the last
bits. Outside 4..15 rows, other dtypes or devices, the plain linear runs.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

BLOCK_BYTES = 1 << 19
MIN_ROWS, MAX_ROWS = 4, 15
MIN_BLOCKS = 8  # fewer blocks than this: not worth splitting


def block_rows(in_features: int, itemsize: int = 4, block_bytes: int = BLOCK_BYTES) -> int:
    """Weight rows per block: the power of two nearest to block_bytes / row bytes."""
    return 1 << max(0, round(math.log2(block_bytes / (in_features * itemsize))))


def chunked_linear(x: torch.Tensor, weight: torch.Tensor, bias, block: int) -> torch.Tensor:
    """F.linear(x, weight, bias), computed `block` output rows of the weight at a time."""
    return _blocked(x, weight_blocks(weight, bias, block))


def weight_blocks(weight: torch.Tensor, bias, block: int) -> list:
    """(transposed weight block, bias block or None) views, what F.linear hands to (add)mm."""
    return [(weight[i:i + block].t(), None if bias is None else bias[i:i + block])
            for i in range(0, weight.shape[0], block)]


def _blocked(x: torch.Tensor, blocks: list) -> torch.Tensor:
    x2 = x.reshape(-1, x.shape[-1])
    parts = [torch.mm(x2, wt) if b is None else torch.addmm(b, x2, wt) for wt, b in blocks]
    return torch.cat(parts, -1).view(*x.shape[:-1], -1)


def _forward(linear: nn.Linear, blocks: list, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // x.shape[-1]
    if MIN_ROWS <= rows <= MAX_ROWS and torch.get_num_threads() == 1:
        return _blocked(x, blocks)
    return F.linear(x, linear.weight, linear.bias)


def _eligible(module: nn.Module, block_bytes: int):
    if type(module) is not nn.Linear:
        return None
    w = module.weight
    if w.dtype != torch.float32 or w.device.type != "cpu":
        return None
    block = block_rows(module.in_features, w.element_size(), block_bytes)
    return block if module.out_features >= MIN_BLOCKS * block else None


@contextlib.contextmanager
def chunked_linears(modules, block_bytes: Optional[int] = None):
    """Within the block, every eligible nn.Linear under `modules` multiplies 4..15 rows block by
    block (float32 on CPU, one thread only); restored on exit."""
    block_bytes = block_bytes or BLOCK_BYTES
    patched = []
    try:
        for root in modules:
            for m in root.modules():
                block = _eligible(m, block_bytes)
                if block is not None and "forward" not in m.__dict__:
                    blocks = weight_blocks(m.weight, m.bias, block)
                    m.forward = lambda x, m=m, blocks=blocks: _forward(m, blocks, x)
                    patched.append(m)
        yield patched
    finally:
        for m in patched:
            del m.forward
