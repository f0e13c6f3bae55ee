"""Four-way mixing of s2t / t2s / s2s / t2t datasets (upstream's BigDataList).

Each next batch comes from one of the datasets still running, picked with
probability proportional to its weight by a generator seeded with
(seed, epoch, rank, worker); a dataset that runs out leaves the draw and the
others go on until all are done. Weights default to the number of list entries
of each dataset, as upstream; `dataset_conf.mix_weights: {s2t: 3, t2s: 1, ...}`
overrides them. Each dataset keeps only its category's output types.
"""
from __future__ import annotations

import random

import torch
from torch.utils.data import IterableDataset


class MixedDataset(IterableDataset):
    def __init__(self, datasets: dict, weights: dict | None = None, seed: int = 777, counter=None):
        self.datasets = datasets
        self.weights = {name: float((weights or {}).get(name, len(ds.entries))) for name, ds in datasets.items()}
        self.seed = seed
        self.epoch = 0
        self.counter = counter

    def set_epoch(self, epoch: int, start_index=None) -> None:
        self.epoch = int(epoch)
        for ds in self.datasets.values():
            ds.set_epoch(epoch, start_index)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        rank = next(iter(self.datasets.values()))._rank_world()[0] if self.datasets else 0
        rng = random.Random(hash((self.seed, self.epoch, rank, worker, 99)))  # ints only: reproducible across runs
        running = {name: iter(ds) for name, ds in self.datasets.items() if self.weights[name] > 0}
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
