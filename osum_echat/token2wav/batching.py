"""Streamed token2wav of concurrent utterances: the most urgent window first, aligned windows as one batch.

    batcher = SolveBatcher(t2w)
    with batcher.stream(deadline) as s:                      # one per streamed utterance
        for chunk in t2w.stream(tokens, prompt=p, solver=s.solve, gate=s.turn): ...

One piece of heavy work runs at a time (one estimator pass of a window's flow ODE, one residual
block of its vocoder, its token encoding), and when the running piece ends the waiting piece with
the earliest deadline goes next (earliest deadline first: an ODE lets a more urgent window in
between two of its passes, a vocoder between two of its blocks). A stream's deadline is the moment its listener runs
out of audio: the time its first packet went out plus the seconds of audio sent since; before its
first packet, the time it opened - so a reply that has not started yet goes before the windows of
replies whose listeners still have audio queued, and under load the first audio of a new reply does
not wait behind the long later windows (15, 30, 60, 100 tokens) of the others. Work by turns costs
nothing on one core; threads that ran side by side only shared it (and the interpreter lock).

A window's flow ODE (n_timesteps estimator passes, the bulk of its work) is the batchable part:
windows of the same shape (same prompt length and window length: the same window index of streams
with the same speaker prompt) stack along the batch. While one piece runs, the ODEs that queue up
behind it and line up become one batch with the deadline of its most urgent member. With
`max_wait_s` > 0, the first window of a shape that finds the estimator idle also waits a little for
other open streams' windows of that shape (`gather_fraction` of the last solve's duration, at most
`max_wait_s`, or until every open stream has joined). Each stream keeps its own noise, prompt,
cross-fades and vocoder state; only the estimator's matmuls see more rows (results equal solving
alone up to float rounding).
"""
from __future__ import annotations

import contextlib
import itertools
import threading
import time
from typing import Callable, Optional

import torch

MAX_ROWS = 16  # windows solved together at most
GATHER_FRACTION = 0.2  # with max_wait_s > 0: an idle estimator waits at most this share of the last solve
MAX_WAIT_S = 0.0  # measured (bench_realtime, 4 sessions): waiting on an idle estimator only added latency


class PriorityGate:
    """One holder at a time; on release the waiter with the smallest priority goes next (first come
    first served among equals). A waiter's priority may be made more urgent while it waits."""

    def __init__(self):
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: list = []  # [priority, seq, threading.Event]
        self._seq = itertools.count()

    def enqueue(self, priority: float) -> list:
        """A place in the queue (granted at once when the gate is free); `wait` on it, then `release`."""
        with self._mutex:
            entry = [priority, next(self._seq), threading.Event()]
            if not self._held:
                self._held = True
                entry[2].set()
            else:
                self._waiters.append(entry)
            return entry

    def hasten(self, entry: list, priority: float) -> None:
        with self._mutex:
            entry[0] = min(entry[0], priority)

    @staticmethod
    def wait(entry: list) -> None:
        entry[2].wait()

    def yield_to_urgent(self, entry: list) -> None:
        """Held by `entry`: if a waiter is more urgent, let it go first and wait for the gate again."""
        with self._mutex:
            if not self._waiters:
                return
            nxt = min(self._waiters, key=lambda e: (e[0], e[1]))
            if nxt[0] >= entry[0]:
                return
            self._waiters.remove(nxt)
            entry[2] = threading.Event()
            self._waiters.append(entry)
            nxt[2].set()
        entry[2].wait()

    def release(self) -> None:
        with self._mutex:
            if not self._waiters:
                self._held = False
                return
            nxt = min(self._waiters, key=lambda e: (e[0], e[1]))
            self._waiters.remove(nxt)
            nxt[2].set()  # the gate passes to it, still held

    @contextlib.contextmanager
    def hold(self, priority: float):
        """Held for the block; yields `pause()`, which lets a more urgent waiter run first."""
        entry = self.enqueue(priority)
        self.wait(entry)
        try:
            yield lambda: self.yield_to_urgent(entry)
        finally:
            self.release()


class _Group:
    def __init__(self, entry: list):
        self.entry = entry  # the group's place at the gate
        self.jobs: list = []
        self.closed = False
        self.full = threading.Event()  # every open stream has joined
        self.done = threading.Event()
        self.results: list = []
        self.error = None


class StreamTurns:
    """One open stream's way into the batcher: its solves and its other work, at its deadline."""

    def __init__(self, batcher: "SolveBatcher", deadline: Callable[[], float]):
        self.batcher, self.deadline = batcher, deadline

    def solve(self, z, mu, spks, cond, steps):
        return self.batcher.solve(z, mu, spks, cond, steps, priority=self.deadline())

    def turn(self):
        return self.batcher.gate.hold(self.deadline())


class SolveBatcher:
    def __init__(self, t2w, max_rows: int = MAX_ROWS, gather_fraction: float = GATHER_FRACTION,
                 max_wait_s: float = MAX_WAIT_S):
        self.t2w = t2w
        self.max_rows, self.gather_fraction, self.max_wait_s = max_rows, gather_fraction, max_wait_s
        self.gate = PriorityGate()
        self._lock = threading.Lock()
        self._gathering: dict = {}
        self._open = 0
        self._last_solve_s = 0.0
        self.solves = 0  # batched solves run
        self.rows = 0  # windows solved (rows / solves: the mean batch)

    @contextlib.contextmanager
    def stream(self, deadline: Optional[Callable[[], float]] = None):
        """Count one streamed utterance as open (an idle estimator waits only while others are open);
        yields its `StreamTurns` (`deadline()`: see the module docstring; default: when it opened)."""
        opened = time.perf_counter()
        with self._lock:
            self._open += 1
        try:
            yield StreamTurns(self, deadline or (lambda: opened))
        finally:
            with self._lock:
                self._open -= 1
                for group in self._gathering.values():  # a leader waiting for this stream stops waiting
                    if len(group.jobs) >= self._open:
                        group.full.set()

    def solve(self, z: torch.Tensor, mu: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor,
              steps: int, priority: float = 0.0) -> torch.Tensor:
        key = (tuple(z.shape), tuple(mu.shape), steps, z.dtype, str(z.device))
        with self._lock:
            group = self._gathering.get(key)
            leader = group is None or group.closed or len(group.jobs) >= self.max_rows
            if leader:
                group = self._gathering[key] = _Group(self.gate.enqueue(priority))
                idle = group.entry[2].is_set()
            else:
                self.gate.hasten(group.entry, priority)
            index = len(group.jobs)
            group.jobs.append((z, mu, spks, cond))
            if len(group.jobs) >= min(self._open, self.max_rows):
                group.full.set()
            budget = self.gather_fraction * self._last_solve_s if self._last_solve_s else self.max_wait_s
            wait = min(self.max_wait_s, budget) if self._open > 1 and leader and idle else 0.0
        if not leader:
            group.done.wait()
            if group.error is not None:
                raise group.error
            return group.results[index]
        try:
            if wait > 0:
                group.full.wait(wait)
            self.gate.wait(group.entry)
        finally:
            with self._lock:
                group.closed = True
                if self._gathering.get(key) is group:
                    del self._gathering[key]
        try:
            t0 = time.perf_counter()
            zs, mus, spkss, conds = (torch.cat(parts) for parts in zip(*group.jobs))
            x = self.t2w.flow.decoder.solve(zs, mus, spkss, conds, steps,
                                            between_steps=lambda: self.gate.yield_to_urgent(group.entry))
            self._last_solve_s = time.perf_counter() - t0
            group.results = list(x.split(1))
            self.solves += 1
            self.rows += len(group.jobs)
        except BaseException as e:  # every stream of the batch gets the error
            group.error = e
            raise
        finally:
            self.gate.release()
            group.done.set()
        return group.results[0]
