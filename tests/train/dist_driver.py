"""Runs osum_echat.bin.train under torchrun and records, per rank, what the test checks:
the batch keys this rank trained on and a checksum of every parameter at the end.

    torchrun --nproc_per_node 2 tests/train/dist_driver.py OUT_DIR -- <train.py args>
"""
import json
import os
import sys

import torch

from osum_echat.bin import train as train_cli
from osum_echat.train.trainer import Trainer

out_dir = sys.argv[1]
argv = sys.argv[sys.argv.index("--") + 1:]
seen = []
_train_batch, _fit = Trainer._train_batch, Trainer.fit


def recording_train_batch(self, batch, meter):
    seen.append({"epoch": self.state.epoch, "keys": list(batch.keys)})
    return _train_batch(self, batch, meter)


def recording_fit(self):
    state = _fit(self)
    module = self.engine.module
    sums = {n: float(p.detach().double().sum()) for n, p in module.named_parameters()}
    rank = int(os.environ.get("RANK", "0"))
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"seen": seen, "params": sums, "step": state.step,
                   "trainable": [n for n, p in module.named_parameters() if p.requires_grad]}, f)
    return state


Trainer._train_batch, Trainer.fit = recording_train_batch, recording_fit
torch.set_num_threads(1)
train_cli.main(argv)
