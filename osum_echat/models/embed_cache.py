"""Encoder outputs of earlier turns, kept between the requests of a conversation.

A conversation's history turns go through the speech encoder again at every new turn (the prompt
embeds every earlier question). Each turn is encoded on its own, so its embeds do not depend on
the other turns: at inference they are looked up by the content of the turn's features instead.
Used only without autograd and in eval mode; `clear()` when the weights change (infer/variants.py).
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import torch

MAX_BYTES = 128 * 2**20  # a full-size 10 s turn is ~2 MB of embeds (3B width); a few dozen conversations


class SpeechEmbedCache:
    def __init__(self, max_bytes: int = MAX_BYTES):
        self.max_bytes = max_bytes
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def key(feat: torch.Tensor) -> tuple:
        data = feat.detach().to("cpu").contiguous().numpy().tobytes()
        return tuple(feat.shape), str(feat.dtype), hashlib.blake2b(data, digest_size=16).hexdigest()

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.numel() * old.element_size()

    def __getstate__(self):  # a copied or pickled model starts with an empty cache
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state):
        self.__init__(state["max_bytes"])

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
