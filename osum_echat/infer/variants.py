"""Two checkpoints of one architecture on one model skeleton.

Upstream releases one checkpoint per think style (tag_think_final.pt, language_think_final.pt) and
its web demo loads two full models. Both come from the same stage-2 model, so here the model is
built once with checkpoint "a" and only the tensors where "b" differs are kept aside (on the host);
`use(name)` swaps those tensors in place. Memory: one model + the differing tensors of one
checkpoint (nothing more when the think checkpoints share frozen parts; the whole LLM again when
stage 3 trained all of it).
"""
from __future__ import annotations

import torch

from osum_echat.models.checkpoint import CheckpointError, read_state_dict, to_model_names
from osum_echat.utils import get_logger

log = get_logger("osum_echat.runtime")


class WeightVariants:
    def __init__(self, model: torch.nn.Module, paths: dict):
        """`paths`: name -> checkpoint; the first is the one already loaded into `model`."""
        if len(paths) != 2:
            raise ValueError("WeightVariants holds exactly two checkpoints")
        self.model = model
        self.paths = dict(paths)
        self.current, other = list(self.paths)
        own = model.state_dict()
        renamed, report = to_model_names(model, read_state_dict(self.paths[other]))
        if not report.ok:
            raise CheckpointError(f"{self.paths[other]} does not fit the model of {self.paths[self.current]}:\n"
                                  f"{report.summary()}")
        # the inactive checkpoint's tensors where it differs from the loaded one
        self.aside = {k: v.to("cpu", own[k].dtype).clone() for k, v in renamed.items()
                      if not torch.equal(v.to(own[k].device, own[k].dtype), own[k])}
        self.aside_name = other
        log.info("checkpoint %s differs from %s in %d of %d tensors (%.1f MB kept aside)", other,
                 self.current, len(self.aside), len(own), self.aside_bytes() / 2**20)

    def aside_bytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.aside.values())

    @property
    def names(self) -> list:
        return list(self.paths)

    def use(self, name: str) -> None:
        if name not in self.paths:
            raise ValueError(f"unknown checkpoint {name!r}; have {self.names}")
        if name == self.current:
            return
        own = self.model.state_dict()
        swapped = {}
        with torch.no_grad():
            for k, v in self.aside.items():
                swapped[k] = own[k].to("cpu", copy=True)
                own[k].copy_(v)
        self.aside, self.aside_name, self.current = swapped, self.current, name
        cache = getattr(self.model, "history_cache", None)
        if cache is not None:  # encoder outputs of the other weights
            cache.clear()
