"""Four-way mixing of s2t / t2s / s2s / t2t datasets (upstream's BigDataList).

Each next batch comes from one of the datasets still running, picked with
probability proportional to its weight by a generator seeded with
(seed, epoch, rank, worker); a dataset that runs out leaves the draw and the
others go on until all are done. Weights default to the number of list entries
of each dataset, as upstream; `dataset_conf.mix_weights: {s2t: 3, t2s: 1, ...}`
overrides them. Each dataset keeps only its category's output types.

One read for several directions: directions given the same list share one dataset that reads the
list once and routes each sample to its direction right after tokenization, before any audio is
decoded (data/filters.py route); its batches still hold one output type each. Its draw weight is the
sum of its directions' weights; mix_weights that differ between directions of one list are refused
(one pass over the list mixes them as the list does; give separate lists to weight them).
"""
from __future__ import annotations

import random

import torch
from torch.utils.data import IterableDataset

from ..config import ConfigError
from ..tasks import MIX_CATEGORIES
from .batching import emit
from .data_index import start_index
from .skips import SkipCounter


class MixedDataset(IterableDataset):
    def __init__(self, datasets: dict, weights: dict | None = None, seed: int = 777, counter=None):
        self.datasets = datasets
        self.weights = {name: float((weights or {}).get(name, len(ds.entries))) for name, ds in datasets.items()}
        self.seed = seed
        self.epoch = 0
        self.counter = counter
        self.resume_skip = {}

    def set_epoch(self, epoch: int, start_index=None) -> None:
        self.epoch = int(epoch)
        self.resume_skip = {}
        for ds in self.datasets.values():
            ds.set_epoch(epoch, start_index)

    def skip_batches(self, per_worker: dict) -> bool:
        """As OsumDataset.skip_batches, counted over the mixed stream."""
        if not all(ds.lazy_ok() for ds in self.datasets.values()):
            return False
        self.resume_skip = {int(w): int(n) for w, n in per_worker.items()}
        return True

    def use_data_index(self, root) -> None:
        """One data index (data/data_index.py) shared by the parts."""
        parts = list(self.datasets.values())
        if parts:
            parts[0].use_data_index(root)
            for ds in parts[1:]:
                ds.index = parts[0].index

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        skip = self.resume_skip.get(worker, 0)
        parts = list(self.datasets.values())
        index, rank = (parts[0].index, parts[0]._rank_world()[0]) if parts else (None, 0)
        return emit(self._mixed(), worker, skip, seeked=start_index(index, rank, worker, skip))

    def _mixed(self):
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        rank = next(iter(self.datasets.values()))._rank_world()[0] if self.datasets else 0
        rng = random.Random(hash((self.seed, self.epoch, rank, worker, 99)))  # ints only: reproducible across runs
        running = {name: ds.batch_lists() for name, ds in self.datasets.items() if self.weights[name] > 0}
        while running:
            names = list(running)
            name = rng.choices(names, weights=[self.weights[n] for n in names], k=1)[0]
            try:
                yield next(running[name])
            except StopIteration:
                del running[name]

    def skip_counts(self) -> dict:
        return self.counter.counts() if self.counter is not None else {}

    def note_counts(self) -> dict:
        return self.counter.notes() if self.counter is not None else {}


def build_mixed(config: dict, data_type: str, data_lists: dict, tokenizer, **kw) -> MixedDataset:
    """{"s2t": list, "t2s": list, ...} -> MixedDataset, one dataset per distinct list."""
    from .dataset import OsumDataset

    unknown = sorted(set(data_lists) - set(MIX_CATEGORIES))
    if unknown:
        raise ConfigError(f"mixed data lists: unknown categories {unknown}; use s2t, t2s, s2s, t2t")
    by_list = {}
    for name in MIX_CATEGORIES:
        if data_lists.get(name):
            by_list.setdefault(str(data_lists[name]), []).append(name)
    conf = config.get("dataset_conf", config) if isinstance(config, dict) else {}
    given = conf.get("mix_weights") or {}
    counter = SkipCounter()
    parts, weights = {}, {}
    for path, names in by_list.items():
        ds = OsumDataset(config, data_type, path, tokenizer, only=tuple(names), counter=counter, **kw)
        weighted = [n for n in names if n in given]
        if len(names) > 1 and weighted and (len(weighted) < len(names) or len({given[n] for n in names}) > 1):
            raise ConfigError(f"dataset_conf.mix_weights: {', '.join(names)} read the same list {path} (once); "
                              f"one pass mixes them as the list does, so their weights must be equal or unset; "
                              f"give each its own list to weight them")
        name = "+".join(names)
        parts[name] = ds
        weights[name] = sum(float(given.get(n, len(ds.entries))) for n in names)
    return MixedDataset(parts, weights, seed=int(config.get("seed", 777)), counter=counter)
