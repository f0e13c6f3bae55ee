"""Checks run once before a training launch (train.sh calls them through bin/check_config.py before
torchrun, so a mistake is one line and a non-zero exit, not one traceback per rank after a DeepSpeed
op build). Imports neither DeepSpeed nor the model code.

    check_data_lists({"s2t": "exp/data/s2t.list"}, "shard", root=None)   # raises ConfigError
"""
from __future__ import annotations

import json
import os
import sys

from ..config import ConfigError
from ..data.sources import read_entries, resolve

MAX_CHECKED = 2000  # entries whose files are looked at per list, spread over the list


def _entry_files(entry, root):
    """The files one list entry reads (tar, combine metadata, raw audio)."""
    if entry.kind in ("shard", "combine"):
        return [entry.value] + ([entry.meta] if entry.meta else [])
    if entry.kind != "raw":
        return []
    try:
        obj = json.loads(entry.value)
    except ValueError:
        return []
    audio = obj.get("wav") if isinstance(obj, dict) else None
    return [resolve(audio, root, entry.base)] if isinstance(audio, str) and audio else []


def check_data_list(path: str, data_type: str, root: str | None = None) -> str:
    """Raise ConfigError when the list is missing, empty, or none of the files it names exist;
    return a warning line when only some are missing (those samples are skipped and counted)."""
    try:
        entries = read_entries(path, data_type, root)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"data list {path}: {e}") from None
    if not entries:
        raise ConfigError(f"data list {path}: no entries")
    step = max(1, len(entries) // MAX_CHECKED)
    files = [f for e in entries[::step] for f in _entry_files(e, root)]
    missing = [f for f in files if not os.path.exists(f)]
    if files and len(missing) == len(files):
        where = f"--data_root {root}" if root else "the list's folder, then the working directory"
        raise ConfigError(f"data list {path}: none of the {len(files)} files checked exist (first: {missing[0]}); "
                          f"relative paths resolve against {where}")
    if missing:
        return (f"warning: data list {path}: {len(missing)} of {len(files)} files checked are missing "
                f"(first: {missing[0]}); those samples will be skipped and counted")
    return ""


def check_launch(lists, data_type: str, root: str | None = None, checkpoint: str | None = None,
                 deepspeed_config: str | None = None) -> None:
    """Every data list, the initial checkpoint and the DeepSpeed JSON; warnings go to stderr."""
    for path in lists:
        warning = check_data_list(path, data_type, root)
        if warning:
            print(warning, file=sys.stderr)
    if checkpoint and not os.path.isfile(checkpoint):
        raise ConfigError(f"--checkpoint {checkpoint}: file not found")
    if deepspeed_config:
        try:
            with open(deepspeed_config, encoding="utf-8") as f:
                json.load(f)
        except FileNotFoundError:
            raise ConfigError(f"--deepspeed_config {deepspeed_config}: file not found") from None
        except ValueError as e:
            raise ConfigError(f"--deepspeed_config {deepspeed_config}: not valid JSON: {e}") from None
