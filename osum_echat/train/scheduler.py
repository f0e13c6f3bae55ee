"""Learning-rate schedules named by the config's `scheduler` key."""
from __future__ import annotations

import torch


class WarmupLR(torch.optim.lr_scheduler.LRScheduler):
    """WeNet's warmuplr: inverse-sqrt decay after a linear warmup.

    lr(step) = base_lr * warmup**0.5 * min(step**-0.5, step * warmup**-1.5),
    so it peaks at base_lr when step == warmup_steps. `step` counts from 1 at
    the first optimizer update; warmup_steps == 0 gives pure base_lr * step**-0.5.
    """

    def __init__(self, optimizer, warmup_steps=25000, last_epoch: int = -1):
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, last_epoch)

    def _warmups(self):
        if isinstance(self.warmup_steps, (list, tuple)):
            return list(self.warmup_steps)
        return [self.warmup_steps] * len(self.base_lrs)

    def get_lr(self):
        step = self.last_epoch + 1
        lrs = []
        for base_lr, warmup in zip(self.base_lrs, self._warmups()):
            if warmup == 0:
                lrs.append(base_lr * step ** -0.5)
            else:
                lrs.append(base_lr * warmup ** 0.5 * min(step ** -0.5, step * warmup ** -1.5))
        return lrs

    def set_step(self, step: int):
        """Jump to `step` (as upstream does when initialising from a checkpoint)."""
        self.last_epoch = step
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr


class ConstantLR(torch.optim.lr_scheduler.LambdaLR):
    def __init__(self, optimizer, last_epoch: int = -1):
        super().__init__(optimizer, lambda _: 1.0, last_epoch)

    def set_step(self, step: int):
        self.last_epoch = step


SCHEDULERS = {"warmuplr": WarmupLR, "constantlr": ConstantLR}


def build_scheduler(name: str, optimizer, conf: dict | None):
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler '{name}' in config key 'scheduler': "
                         f"use one of {sorted(SCHEDULERS)}")
    return SCHEDULERS[name](optimizer, **(conf or {}))
