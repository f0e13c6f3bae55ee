"""Training checkpoints: atomic writes, newest-N retention, resume lookup.

A checkpoint called TAG (e.g. `step_1250`, `epoch_0`) in the model dir is
  TAG.pt        model weights only: a plain state dict, the upstream .pt format
  TAG.state.pt  optimizer / scheduler state (only when save_states asks)
  TAG.rng.pt    python / numpy / torch (and accelerator) RNG state of every rank
  TAG/          DeepSpeed engine directory (deepspeed engine only)
  TAG.yaml      step, epoch, data position, cv losses and the resolved config
Every file is written to a temporary name and renamed, and TAG.yaml is written
last: a checkpoint whose yaml exists is complete, anything else is debris from
a killed run and is ignored (and cleaned up) on resume.
"""
from __future__ import annotations

import glob
import os
import re
import random
import shutil

import numpy as np
import torch
import yaml

from osum_echat.utils import get_logger

logger = get_logger(__name__)

FINAL = "final.pt"


def atomic_torch_save(obj, path: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_yaml(data: dict, path: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf8") as f:
        yaml.safe_dump(data, f, allow_unicode=True, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def paths(model_dir: str, tag: str) -> dict:
    base = os.path.join(model_dir, tag)
    return {"model": base + ".pt", "state": base + ".state.pt", "rng": base + ".rng.pt", "ds_dir": base,
            "info_path": base + ".yaml"}


def rng_state() -> dict:
    """This process's global RNG states (dropout, LoRA dropout and anything else
    drawing from the global generators; the data pipeline seeds its own)."""
    name, keys, *rest = np.random.get_state()
    # as tensors and plain numbers, so weights_only loading accepts it
    out = {"python": random.getstate(), "torch": torch.get_rng_state(),
           "numpy": [name, torch.from_numpy(keys.astype(np.int64)), *rest]}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    npu = getattr(torch, "npu", None)
    if npu is not None and npu.is_available():
        out["npu"] = npu.get_rng_state_all()
    return out


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npu = getattr(torch, "npu", None)
    if "npu" in state and npu is not None and npu.is_available():
        npu.set_rng_state_all(state["npu"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def write_info(model_dir: str, tag: str, info: dict) -> None:
    """The commit marker: call after every other file of the checkpoint is in place."""
    atomic_write_yaml(info, paths(model_dir, tag)["info_path"])


def list_checkpoints(model_dir: str) -> list[dict]:
    """Complete checkpoints (their yaml parses and names a step), oldest first."""
    found = []
    for info_path in glob.glob(os.path.join(model_dir, "*.yaml")):
        tag = os.path.basename(info_path)[:-len(".yaml")]
        if not re.fullmatch(r"(step|epoch)_\d+", tag):
            continue  # train.yaml and anything else that is not a checkpoint
        try:
            mtime = os.path.getmtime(info_path)
            with open(info_path, encoding="utf8") as f:
                info = yaml.safe_load(f) or {}
        except FileNotFoundError:
            continue  # removed by a concurrent prune
        except (OSError, yaml.YAMLError) as e:
            logger.warning("ignoring unreadable checkpoint info %s: %s", info_path, e)
            continue
        p = paths(model_dir, tag)
        if "step" not in info or not (os.path.exists(p["model"]) or os.path.isdir(p["ds_dir"])):
            if not os.path.exists(info_path):
                continue  # pruned while we looked
            logger.warning("ignoring incomplete checkpoint %s (no step or no weights)", info_path)
            continue
        found.append({"tag": tag, **p, "info": info, "mtime": mtime})
    found.sort(key=lambda c: (c["info"]["step"], c["info"].get("epoch_done", False), c["mtime"]))
    return found


def latest_checkpoint(model_dir: str) -> dict | None:
    ckpts = list_checkpoints(model_dir) if os.path.isdir(model_dir) else []
    return ckpts[-1] if ckpts else None


def remove_checkpoint(ckpt: dict) -> None:
    os.remove(ckpt["info_path"])  # un-commit first, then drop the payload
    for key in ("model", "state", "rng"):
        if os.path.exists(ckpt[key]):
            os.remove(ckpt[key])
    if os.path.isdir(ckpt["ds_dir"]):
        shutil.rmtree(ckpt["ds_dir"], ignore_errors=True)


def prune_checkpoints(model_dir: str, keep: int) -> None:
    """Keep the newest `keep` checkpoints (keep <= 0 keeps all)."""
    if keep <= 0:
        return
    for ckpt in list_checkpoints(model_dir)[:-keep]:
        logger.info("removing old checkpoint %s", ckpt["tag"])
        remove_checkpoint(ckpt)


def clean_debris(model_dir: str) -> None:
    """Remove temporary files left by a process killed in the middle of a save."""
    for tmp in glob.glob(os.path.join(model_dir, "*.tmp.*")):
        logger.warning("removing partial file from an interrupted save: %s", tmp)
        os.remove(tmp)


def convert_deepspeed_dir_to_pt(ds_dir: str, out_path: str | None = None) -> str:
    """One DeepSpeed checkpoint directory (ZeRO-1/2) -> a single model .pt.

    Reads `mp_rank_00_model_states.pt`'s module weights as upstream's
    convert_ckpt_dir_to_pt does, casting them to fp32; writes `<dir>.pt` by default.
    """
    src = os.path.join(ds_dir, "mp_rank_00_model_states.pt")
    if not os.path.exists(src):
        raise FileNotFoundError(f"{src} not found: is {ds_dir} a DeepSpeed checkpoint "
                                "directory (engine.save_checkpoint output, ZeRO stage <= 2)?")
    # DeepSpeed stores python objects beside the weights, so weights_only is not possible here.
    states = torch.load(src, map_location="cpu", weights_only=False)
    weights = {k: (v.float() if v.is_floating_point() else v) for k, v in states["module"].items()}
    out_path = out_path or ds_dir.rstrip("/") + ".pt"
    atomic_torch_save(weights, out_path)
    return out_path
