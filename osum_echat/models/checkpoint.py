"""Checkpoint load / save / key check in upstream's format.

Upstream saves a plain `model.state_dict()` (.pt, no "module." prefix). The
released files hold the tied LLM embedding under four names
(llama_model.model.embed_tokens, llama_model.lm_head and the top-level
embed_tokens / lm_head aliases) and the sinusoid buffers `*.pos_enc.pe`;
our module names are upstream's, so those load as they are.

Names are matched through `canonical_name`, which removes what differs
between layouts of the same weights: a DDP "module." prefix and the PEFT
LoRA wrapping ("base_model.model.", ".base_layer"). So a checkpoint saved
with or without LoRA loads into a model built the other way.
"""
from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import torch

from osum_echat.utils import get_logger

logger = get_logger(__name__)


class CheckpointError(RuntimeError):
    pass


def canonical_name(name: str) -> str:
    if name.startswith("module."):
        name = name[len("module."):]
    name = name.replace("llama_model.base_model.model.", "llama_model.")
    return name.replace(".base_layer.", ".")


@dataclasses.dataclass
class KeyReport:
    missing: list  # model entries the checkpoint lacks
    unexpected: list  # checkpoint entries the model lacks
    mismatched: list  # (name, checkpoint shape, model shape)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 8) -> str:
        """Differences grouped by top-level module (and layer), one line per group."""
        if self.ok:
            return "all keys and shapes match"
        lines = []
        for title, names in (("missing", self.missing), ("unexpected", self.unexpected)):
            for group, members in _group(names).items():
                shown = ", ".join(members[:limit]) + (" ..." if len(members) > limit else "")
                lines.append(f"{title} {group}: {len(members)} ({shown})")
        for name, got, want in self.mismatched:
            lines.append(f"shape {name}: checkpoint {tuple(got)} vs model {tuple(want)}")
        return "\n".join(lines)


def _group(names: Iterable[str]) -> Dict[str, list]:
    groups = defaultdict(list)
    for name in names:
        group = re.sub(r"\.\d+\..*", ".N", name) if re.search(r"\.\d+\.", name) else name.split(".")[0]
        groups[group].append(name)
    return dict(groups)


def compare_keys(model_shapes: Dict[str, tuple], ckpt_shapes: Dict[str, tuple]) -> KeyReport:
    """Compare {name: shape} maps through canonical names."""
    model_by = {canonical_name(k): k for k in model_shapes}
    ckpt_by = {canonical_name(k): k for k in ckpt_shapes}
    missing = [model_by[c] for c in model_by if c not in ckpt_by]
    unexpected = [ckpt_by[c] for c in ckpt_by if c not in model_by]
    mismatched = [(model_by[c], tuple(ckpt_shapes[ckpt_by[c]]), tuple(model_shapes[model_by[c]]))
                  for c in model_by if c in ckpt_by
                  and tuple(ckpt_shapes[ckpt_by[c]]) != tuple(model_shapes[model_by[c]])]
    return KeyReport(missing, unexpected, mismatched)


def read_state_dict(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """A state dict from .pt/.bin (weights_only) or .safetensors, on CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    try:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report which file and why, not a traceback
        raise CheckpointError(f"{path}: cannot read as a weights-only torch checkpoint ({e})") from None
    if isinstance(state, dict) and "module" in state and isinstance(state["module"], dict):
        state = state["module"]  # a DeepSpeed mp_rank_00_model_states.pt
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def to_model_names(model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> Tuple[dict, KeyReport]:
    """Rename checkpoint entries to the model's own names; report differences."""
    own = model.state_dict()
    report = compare_keys({k: tuple(v.shape) for k, v in own.items()},
                          {k: tuple(v.shape) for k, v in state.items()})
    by_canon = {canonical_name(k): k for k in own}
    bad = {name for name, _, _ in report.mismatched}
    renamed = {}
    for k, v in state.items():
        target = by_canon.get(canonical_name(k))
        if target is not None and target not in bad:
            renamed[target] = v
    return renamed, report


def load_checkpoint(model: torch.nn.Module, path: str | os.PathLike, strict: bool = False) -> KeyReport:
    """Load `path` into `model`: matching entries are copied (cast to the
    model's dtypes), the rest reported grouped by module. strict=True raises
    CheckpointError listing the differences instead of loading partially."""
    state = read_state_dict(path)
    renamed, report = to_model_names(model, state)
    if strict and not report.ok:
        raise CheckpointError(f"{path} does not fit the model:\n{report.summary()}")
    model.load_state_dict(renamed, strict=False)
    if report.ok:
        logger.info("loaded %s: %d entries, all keys match", path, len(renamed))
    else:
        logger.warning("loaded %s partially (%d entries):\n%s", path, len(renamed), report.summary())
    return report


def save_checkpoint(state_dict: Dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write to a temp file in the same folder, then rename (no torn files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file
            save_file({k: v.detach().contiguous().clone() for k, v in state_dict.items()}, tmp)
        else:
            torch.save(state_dict, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_key_table(path: str | os.PathLike) -> Dict[str, tuple]:
    """{name: shape} from a `name<TAB>shape<TAB>dtype` manifest (shape like 1024x80x3)."""
    shapes = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or (n == 1 and line.startswith("name")):
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise CheckpointError(f"{path}:{n}: expected 'name<TAB>shape[<TAB>dtype]', got {line!r}")
        shapes[parts[0]] = tuple(int(d) for d in parts[1].split("x")) if parts[1] else ()
    return shapes


def average_state_dicts(paths: list, dtype: Optional[torch.dtype] = None) -> Dict[str, torch.Tensor]:
    """Element-wise mean of checkpoints, one entry at a time (float32
    accumulation over memory-mapped files, so the peak is the output plus one
    entry); floating entries come out in `dtype` (default: as stored)."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    states = [read_state_dict(p) for p in paths]
    for p, state in zip(paths[1:], states[1:]):
        if set(state) != set(states[0]):
            raise CheckpointError(f"{p}: keys differ from {paths[0]}; cannot average")
    out = {}
    for k, first in states[0].items():
        if not first.is_floating_point():
            out[k] = first.clone()
            continue
        total = first.float().clone()
        for state in states[1:]:
            total += state[k].float()
        out[k] = (total / len(paths)).to(dtype or first.dtype)
    return out
