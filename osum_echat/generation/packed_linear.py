"""oneDNN-prepacked weights for the few rows of a batched decode step on CPU.

Measured (torch 2.13, MKL + oneDNN, AVX-512; `bench/bench_decode.py` prints the rates): float32
`F.linear` with 4..32 input rows is far from the memory-bound time of one row - with 8 rows the
Qwen2.5-0.5B MLP takes 2.5-3x its one-row time on 1 thread, up to 3x on 2 threads, its 151,936-way
text head 2.4-3.4x. oneDNN's matmul on a weight reordered once into its blocked layout
(`torch.ops.mkldnn._reorder_linear_weight` + `_linear_pointwise`) does 8 rows in 1.2-1.6x the one-row
time on any thread count. With 1..3 float32 rows MKL's plain linear is as fast or faster; bfloat16's
plain linear reorders the weight at every call, so there the packs win from one row on (0.5B step
at batch 1, 2 threads: 106 -> 80 ms). oneDNN's ~30 us call overhead loses on small weights, so only
weights of >= MIN_NUMEL elements are packed. Results agree with F.linear to float rounding (float32:
~1e-6 relative, the size of the difference F.linear itself shows between 1 and 8 rows).

The packed copy costs the weight's memory again. It is made once per weight and kept while the
module lives (and its weight is unchanged: an in-place update repacks); mode "auto" packs only
when the copies fit in half the memory the machine has available, "on" always, "off" never.
"""
from __future__ import annotations

import contextlib
import logging
import weakref
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
# fewest rows that take the packed path, per weight dtype: float32 1..3 rows are as fast with MKL;
# bfloat16's plain linear reorders the weight at every call, so packs win from one row on
MIN_ROWS = {torch.float32: 4, torch.bfloat16: 1}
MAX_ROWS = 32
MIN_NUMEL = 1 << 19  # below this oneDNN's call overhead eats the gain (measured at 896 x 128)
PACK_HINT_ROWS = 8

# module -> (weight version key, packed weight); dies with the module
_PACKS: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def supported() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def _version(w: torch.Tensor) -> tuple:
    return (w.data_ptr(), w._version, w.dtype, tuple(w.shape))


def _eligible(module: nn.Module) -> bool:
    if type(module) is not nn.Linear:
        return False
    w = module.weight
    return w.device.type == "cpu" and w.dtype in MIN_ROWS and w.numel() >= MIN_NUMEL


def _packed(module: nn.Linear) -> torch.Tensor:
    entry = _PACKS.get(module)
    if entry is None or entry[0] != _version(module.weight):
        packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), PACK_HINT_ROWS)
        entry = _PACKS[module] = (_version(module.weight), packed)
    return entry[1]


def packed_bytes_missing(modules) -> int:
    """Bytes the packs that do not exist yet would take."""
    return sum(m.weight.numel() * m.weight.element_size() for m in modules
               if m not in _PACKS or _PACKS[m][0] != _version(m.weight))


def available_memory() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _forward(module: nn.Linear, packed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // x.shape[-1]
    if MIN_ROWS[module.weight.dtype] <= rows <= MAX_ROWS and x.dtype == module.weight.dtype:
        return torch.ops.mkldnn._linear_pointwise(x, packed, module.bias, "none", [], "")
    return F.linear(x, module.weight, module.bias)


_warned: set = set()


def _wanted(mode: str, need: int) -> bool:
    if mode == "on" or need == 0:
        return True
    avail = available_memory()
    if avail is None or need <= avail // 2:
        return True
    if need not in _warned:
        _warned.add(need)
        log.warning("decode: not packing %.1f GiB of weights for batched steps (%.1f GiB available; "
                "pass packed_weights='on' to force); batched steps use the plain matmul",
                need / 2 ** 30, avail / 2 ** 30)
    return False


def eligible_linears(modules) -> list:
    """The nn.Linear layers under `modules` that packing would apply to (tied ones once). A caller that
    enters packed_linears at every decode step computes this once: walking a model's modules costs
    about as much as a tiny model's step."""
    return list(dict.fromkeys(m for root in modules for m in root.modules() if _eligible(m)))


@contextlib.contextmanager
def packed_linears(modules, mode: str = "auto", batch_size: int = 4, linears: Optional[list] = None):
    """Within the block, every eligible nn.Linear under `modules` (or of `linears`, from
    eligible_linears) multiplies MIN_ROWS..32 rows with its oneDNN-packed weight (made on first use,
    kept while the module lives); restored on exit. Nothing is packed for batches that never reach
    MIN_ROWS rows, or with mode "off"."""
    if mode not in MODES:
        raise ValueError(f"packed_weights {mode!r}: expected one of {MODES}")
    linears = eligible_linears(modules) if linears is None else linears
    linears = [m for m in linears if batch_size >= MIN_ROWS[m.weight.dtype] and "forward" not in m.__dict__]
    if mode == "off" or not linears or not supported() \
            or not _wanted(mode, packed_bytes_missing(linears)):
        yield []
        return
    try:
        packs = [_packed(m) for m in linears]
    except RuntimeError as e:  # a oneDNN build without this reorder: the plain matmul still works
        log.warning("decode: packing weights for batched steps failed (%s); using the plain matmul", e)
        yield []
        return
    try:
        for m, p in zip(linears, packs):
            m.forward = lambda x, m=m, p=p: _forward(m, p, x)
        yield linears
    finally:
        for m in linears:
            m.__dict__.pop("forward", None)
