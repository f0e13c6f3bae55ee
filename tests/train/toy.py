"""A tiny stand-in for model + dataset with the same interfaces, for trainer-logic tests.

The model learns a fixed linear map; the dataset yields seeded batches whose order depends
on the epoch, like the real pipeline. Batches can be marked to make the loss NaN.
"""
from __future__ import annotations

import torch


class ToyBatch(dict):
    def __init__(self, x, y, keys, nan=False):
        super().__init__(x=x, y=y)
        self.keys_ = keys
        self.nan = nan
        self.output_type = "text"

    @property
    def keys(self):
        return self.keys_

    def to(self, device):
        return ToyBatch(self["x"].to(device), self["y"].to(device), self.keys_, self.nan)


class ToyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, batch):
        logits = self.lin(batch["x"])
        loss = torch.nn.functional.cross_entropy(logits, batch["y"])
        if batch.nan:
            loss = loss * float("nan")
        acc = (logits.argmax(-1) == batch["y"]).float().mean()
        return dict(loss=loss, acc=acc, num_tokens=len(batch["y"]), output_type="text")


class ToyDataset(torch.utils.data.IterableDataset):
    def __init__(self, num_batches=12, nan_batches=(), seed=0):
        self.num_batches = num_batches
        self.nan_batches = set(nan_batches)
        self.seed = seed
        self.epoch = 0
        w = torch.randn(4, 3, generator=torch.Generator().manual_seed(123))
        self.w = w

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        for i in range(self.num_batches):
            x = torch.randn(8, 4, generator=g)
            y = (x @ self.w).argmax(-1)
            yield ToyBatch(x, y, [f"e{self.epoch}b{i}u{j}" for j in range(8)], nan=i in self.nan_batches)
