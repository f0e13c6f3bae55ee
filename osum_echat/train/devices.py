"""Device selection in one place: cuda, then npu (Ascend), then cpu, unless told otherwise.

torch_npu is imported only when an NPU is requested or its package is present: installing it on a
machine without Ascend CANN breaks `import torch`, so it is never a hard dependency.
"""
from __future__ import annotations

import importlib.util
import os

import torch

BACKENDS = {"cuda": "nccl", "npu": "hccl", "cpu": "gloo"}
ORDER = ("cuda", "npu", "cpu")


class DeviceError(RuntimeError):
    """The requested device cannot be used here; the message says what to install or change."""


def _cuda_available() -> bool:
    return torch.cuda.is_available()


def _npu_available() -> bool:
    if importlib.util.find_spec("torch_npu") is None:
        return False
    _import_torch_npu()
    return hasattr(torch, "npu") and torch.npu.is_available()


def _import_torch_npu() -> None:
    try:
        import torch_npu  # noqa: F401  (registers torch.npu)
    except Exception as e:  # ImportError, or CANN libraries missing
        raise DeviceError(
            "device 'npu' needs torch_npu matching torch and the Ascend CANN toolkit "
            f"(source set_env.sh first); importing torch_npu failed: {e}") from None


def available(kind: str) -> bool:
    return {"cuda": _cuda_available, "npu": _npu_available, "cpu": lambda: True}[kind]()


def device_type(name: str | None = None) -> str:
    """'cuda' | 'npu' | 'cpu': `name` if given (and usable), else the first one available."""
    name = (name or os.environ.get("OSUM_DEVICE") or "").strip().lower()
    if not name or name == "auto":
        return next(kind for kind in ORDER if available(kind))
    kind = name.split(":")[0]
    if kind not in BACKENDS:
        raise DeviceError(f"unknown device '{name}': use one of {', '.join(ORDER)} (or leave empty to detect)")
    if kind == "npu" and importlib.util.find_spec("torch_npu") is None:
        raise DeviceError("device 'npu' requested but torch_npu is not installed: see README, 'Ascend NPU'")
    if not available(kind):
        raise DeviceError(f"device '{name}' requested but not available on this machine")
    return kind


def select_device(name: str | None = None, local_rank: int | None = None) -> torch.device:
    """The torch.device this process should use (one accelerator per local rank)."""
    kind = device_type(name)
    if kind == "cpu":
        return torch.device("cpu")
    if name and ":" in name:
        return torch.device(name)
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device(kind, local_rank)


def dist_backend(device: torch.device | str) -> str:
    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    return BACKENDS[kind]


def device_count(kind: str) -> int:
    if kind == "cuda":
        return torch.cuda.device_count()
    if kind == "npu":
        return torch.npu.device_count() if available("npu") else 0
    return 1


def supports_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "npu"


def set_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.set_device(device)
    elif device.type == "npu":
        torch.npu.set_device(device)


def is_accelerator(device: torch.device) -> bool:
    return device.type != "cpu"


def comm_device(backend: str) -> torch.device:
    """Where small collective tensors must live: nccl and hccl only reduce accelerator tensors."""
    kind = {b: k for k, b in BACKENDS.items()}.get(str(backend).lower(), "cpu")
    if kind == "cpu":
        return torch.device("cpu")
    return torch.device(kind, getattr(torch, kind).current_device())
