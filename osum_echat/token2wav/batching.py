"""Streamed token2wav windows of concurrent sessions solved as one batch where they line up.

    batcher = SolveBatcher(t2w)
    with batcher.stream():                                   # one per streamed utterance
        for chunk in t2w.stream(tokens, prompt=p, solver=batcher.solve): ...

A window's flow ODE (n_timesteps estimator passes, the bulk of a window's work) is the batchable
part: windows of the same shape (same prompt length and window length: the same window index of
streams with the same speaker prompt) stack along the batch. The first caller of a shape leads: it
waits a short while for other streams' windows of that shape - only while other streams are open,
at most `gather_fraction` of the last solve's duration (`max_wait_s` at most, and before the first
solve) or until every open stream has joined - then solves them all and hands each its rows. Windows that do not line up are
solved in their own threads as before, so nothing is serialised. Each stream keeps its own
noise, prompt, cross-fades and vocoder state; only the estimator's matmuls see more rows (results
equal solving alone up to float rounding).
"""
from __future__ import annotations

import contextlib
import threading
import time

import torch

MAX_ROWS = 16  # windows solved together at most
GATHER_FRACTION = 0.2  # a leader waits at most this share of the last solve's duration
MAX_WAIT_S = 0.02


class _Group:
    def __init__(self):
        self.jobs: list = []
        self.closed = False
        self.full = threading.Event()  # every open stream has joined
        self.done = threading.Event()
        self.results: list = []
        self.error = None


class SolveBatcher:
    def __init__(self, t2w, max_rows: int = MAX_ROWS, gather_fraction: float = GATHER_FRACTION,
                 max_wait_s: float = MAX_WAIT_S):
        self.t2w = t2w
        self.max_rows, self.gather_fraction, self.max_wait_s = max_rows, gather_fraction, max_wait_s
        self._lock = threading.Lock()
        self._gathering: dict = {}
        self._open = 0
        self._last_solve_s = 0.0
        self.solves = 0  # batched solves run
        self.rows = 0  # windows solved (rows / solves: the mean batch)

    @contextlib.contextmanager
    def stream(self):
        """Count one streamed utterance as open (a leader waits only while others are open)."""
        with self._lock:
            self._open += 1
        try:
            yield self
        finally:
            with self._lock:
                self._open -= 1
                for group in self._gathering.values():  # a leader waiting for this stream stops waiting
                    if len(group.jobs) >= self._open:
                        group.full.set()

    def solve(self, z: torch.Tensor, mu: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor,
              steps: int) -> torch.Tensor:
        key = (tuple(z.shape), tuple(mu.shape), steps, z.dtype, str(z.device))
        with self._lock:
            group = self._gathering.get(key)
            leader = group is None or group.closed or len(group.jobs) >= self.max_rows
            if leader:
                group = self._gathering[key] = _Group()
            index = len(group.jobs)
            group.jobs.append((z, mu, spks, cond))
            if len(group.jobs) >= min(self._open, self.max_rows):
                group.full.set()
            budget = self.gather_fraction * self._last_solve_s if self._last_solve_s else self.max_wait_s
            wait = min(self.max_wait_s, budget) if self._open > 1 else 0.0
        if not leader:
            group.done.wait()
            if group.error is not None:
                raise group.error
            return group.results[index]
        if wait > 0:
            group.full.wait(wait)
        with self._lock:
            group.closed = True
            if self._gathering.get(key) is group:
                del self._gathering[key]
        try:
            t0 = time.perf_counter()
            zs, mus, spkss, conds = (torch.cat(parts) for parts in zip(*group.jobs))
            x = self.t2w.flow.decoder.solve(zs, mus, spkss, conds, steps)
            self._last_solve_s = time.perf_counter() - t0
            group.results = list(x.split(1))
            self.solves += 1
            self.rows += len(group.jobs)
        except BaseException as e:  # every stream of the batch gets the error
            group.error = e
            raise
        finally:
            group.done.set()
        return group.results[0]
