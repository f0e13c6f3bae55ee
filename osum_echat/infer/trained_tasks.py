"""Which tasks a checkpoint was trained on, read from the stage folder that produced it.

train.sh writes the stage's training lists to DIR/data/{s2t,t2s,s2s,t2t}.list (cv.list beside them)
and training saves DIR/train.yaml; a checkpoint in DIR (or a link to one, as the demo's
tag_think_final.pt) leads there. The task tags of the first samples of each list are counted: enough
to pick a default task a front-end offers, not a census of the corpus.
"""
from __future__ import annotations

import collections
import itertools
from pathlib import Path
from typing import Optional

import yaml

from osum_echat import tasks as task_table
from osum_echat.config import saved_config
from osum_echat.data.sources import read_entries, read_entry

class _Skips:
    """Broken samples met while peeking at tags: counted only (training reported them)."""
    def __init__(self):
        self.n = 0

    def skip(self, *args, **kwargs) -> None:
        self.n += 1


TRAIN_LISTS = tuple(f"{c}.list" for c in task_table.MIX_CATEGORIES)  # cv.list is not training data


def trained_tasks(checkpoint, entries_per_list: int = 2, samples_per_list: int = 64) -> collections.Counter:
    """Tag -> samples seen, over the first samples of each training list of the checkpoint's stage;
    empty when the stage folder or its lists are not there."""
    config = saved_config(checkpoint)
    if config is None:
        return collections.Counter()
    with open(config, encoding="utf-8") as f:
        data_type = ((yaml.safe_load(f) or {}).get("train_conf") or {}).get("data_type") or "raw"
    counts: collections.Counter = collections.Counter()
    counter = _Skips()
    for name in TRAIN_LISTS:
        path = config.parent / "data" / name
        if not path.is_file():
            continue
        entries = read_entries(str(path), data_type)[:entries_per_list]
        samples = itertools.chain.from_iterable(read_entry(e, counter) for e in entries)
        for sample in itertools.islice(samples, samples_per_list):
            counts[task_table.normalize_tag(sample.get("task") or task_table.DEFAULT_TASK)] += 1
    return counts


def default_task(checkpoint, fallback: str) -> tuple[str, str]:
    """(tag, why): the task the checkpoint saw most (ties: a speaking task first, then table order),
    else `fallback`."""
    counts = {tag: n for tag, n in trained_tasks(checkpoint).items() if tag in task_table.TASKS}
    if not counts:
        return fallback, f"no training lists found beside {checkpoint}"
    order = list(task_table.TASKS)
    tag = max(counts, key=lambda t: (counts[t], task_table.TASKS[t].speech_output, -order.index(t)))
    return tag, "trained on " + ", ".join(f"{t} ({n})" for t, n in sorted(counts.items(), key=lambda x: -x[1]))
