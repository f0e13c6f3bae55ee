"""Full-size helpers shared by bench_fullsize.py and the 24 GB LoRA measurement:
a random checkpoint in the released format and layout, written without ever
holding the model in memory, and the tokenizer to build with.
"""
from __future__ import annotations

import os
import resource
import shutil
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
FULL_CONFIG = REPO / "conf" / "ct_config.yaml"
CHUNK = 1 << 25  # elements generated per write


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def full_config(**overrides) -> dict:
    from osum_echat.config import load_config
    return {**load_config(str(FULL_CONFIG)), **overrides}


def tokenizer_for(config: dict):
    """The real Qwen2.5 tokenizer when llm_path has it; else the tiny test
    tokenizer (its ids are a subset of Qwen's range: memory and time are the same)."""
    from osum_echat.config import ConfigError
    from osum_echat.tokenizer import load_tokenizer
    try:
        return load_tokenizer(config["llm_path"]), "qwen2.5 (" + str(config["llm_path"]) + ")"
    except ConfigError:
        return load_tokenizer(str(REPO / "conf" / "tiny_llm")), "tiny stand-in (conf/tiny_llm)"


def _mapped_base(path: str) -> int:
    with open("/proc/self/maps") as f:
        starts = [int(line.split("-")[0], 16) for line in f if line.rstrip().endswith(path)]
    if not starts:
        raise RuntimeError(f"{path} is not memory-mapped")
    return min(starts)


def _fill_value(name: str, t: torch.Tensor, g: torch.Generator, n: int) -> torch.Tensor:
    """Norm scales 1, biases 0, the rest N(0, 0.02): a model whose forward stays finite."""
    if t.dim() == 1 and name.endswith("bias"):
        return torch.zeros(n)
    if t.dim() == 1 and name.endswith("weight"):
        return torch.ones(n)
    return torch.randn(n, generator=g).mul_(0.02)


def write_random_checkpoint(config: dict, path: str, dtype=torch.bfloat16, seed: int = 0) -> int:
    """A `torch.save` state dict with the released names, shapes, dtype and
    storage sharing (tied embedding: one storage under four names), random
    values. The file layout is written first with empty storages
    (skip_data), then each storage's bytes are written at its offset, a
    chunk at a time: the writer never holds more than one chunk."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from osum_echat.models import build_model
    model = build_model(config, device="meta", llm_dtype=dtype).to(dtype)
    # state_dict() detaches: find tied entries through the module's own tensors
    owner = {**dict(model.named_buffers(remove_duplicate=False)),
             **dict(model.named_parameters(remove_duplicate=False))}
    fakes, shapes = {}, model.state_dict()
    with FakeTensorMode():
        state = {}
        for k, v in shapes.items():
            key = id(owner.get(k, v))
            if key not in fakes:
                fakes[key] = torch.empty(v.shape, dtype=v.dtype)
            state[k] = fakes[key]
    with torch.serialization.skip_data(materialize_fake_tensors=True):
        torch.save(state, path)
    del state, fakes
    path = os.path.abspath(path)
    mapped = torch.load(path, mmap=True, weights_only=True)
    base = _mapped_base(path)
    g = torch.Generator().manual_seed(seed)
    done = set()
    with open(path, "r+b") as f:
        for name, t in mapped.items():
            if t.data_ptr() in done:
                continue
            done.add(t.data_ptr())
            offset = t.data_ptr() - base
            for start in range(0, t.numel(), CHUNK):
                n = min(CHUNK, t.numel() - start)
                data = _fill_value(name, t, g, n).to(t.dtype)
                os.pwrite(f.fileno(), data.view(torch.uint8).numpy().tobytes(), offset + start * t.element_size())
    del mapped
    return os.path.getsize(path)


class ScratchDir:
    """A folder under /tmp (or --tmp) that is removed afterwards unless keep."""

    def __init__(self, root: str | None, keep: bool):
        self.path = tempfile.mkdtemp(prefix="osum_fullsize_", dir=root)
        self.keep = keep

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)
