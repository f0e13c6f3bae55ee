"""Continuous batching: one decode loop shared by every concurrent request on one model.

    sched = Scheduler(model)                       # the loop starts with the first request
    ticket = sched.submit(key, spec, conf, prompt_embeds, on_event)
    on_event("token", (phase, id)) ... on_event("done", Hypothesis)   # called from the loop's thread
    ticket.cancel()                                # the row leaves at the next step boundary

A background thread owns the LLM: it keeps one running `DecodeBatch` (stepper.py, the step the
offline Decoder runs too). Between two steps it admits the requests that arrived: each is
prefilled on its own (as if decoded alone) and joins the running batch, the caches laid
left-padded into one (`DecodeBatch.join`); rows that finished or were cancelled leave after the
step. Rows of different tasks and decode configs share the batch: each row carries its own phase
schedule, processors and sampling generator, so a request's ids are what it gets decoded alone
(greedy: up to float rounding of the batched matmuls, as with the offline batches).

A request admitted while others decode waits at most one step plus its own prefill; every running
row waits for the prefills of the requests admitted before its next step.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

import torch

from osum_echat.generation.decode import Decoder, hypothesis
from osum_echat.generation.packed_linear import MODES as PACK_MODES, eligible_linears, packed_linears
from osum_echat.generation.stepper import DecodeBatch
from osum_echat.utils import get_logger

log = get_logger("osum_echat.scheduler")

MAX_ROWS = 32  # rows stepped together; later requests wait for a row to leave
TRIM_COLUMNS = 32  # drop the cache's leading columns no row attends to once there are this many


class Ticket:
    """One submitted request: `cancel()` makes its row leave the batch at the next step boundary;
    `done` is set once its final event ("done" or "error") was delivered."""

    def __init__(self, row, embeds: torch.Tensor, on_event: Callable, cancel_event: Optional[threading.Event]):
        self.row, self.embeds, self.on_event = row, embeds, on_event
        self.cancel_event = cancel_event or threading.Event()
        self.done = threading.Event()

    @property
    def key(self) -> str:
        return self.row.key

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def _finish(self, kind: str, value) -> None:
        if not self.done.is_set():
            try:
                self.on_event(kind, value)
            finally:
                self.done.set()


class Scheduler:
    def __init__(self, model, packed_weights: str = "auto", max_rows: int = MAX_ROWS):
        if packed_weights not in PACK_MODES:
            raise ValueError(f"packed_weights {packed_weights!r}: expected one of {PACK_MODES}")
        self.model = model
        self.rows_maker = Decoder(model)  # rows and hypotheses as the offline decoder makes them
        self.vocab = self.rows_maker.vocab
        self.packed_weights, self.max_rows = packed_weights, max_rows
        self._linears: Optional[list] = None  # packing candidates, found at the first step
        self._lock = threading.Condition()
        self._pending: list = []
        self._active: list = []  # tickets of the rows in the running batch, in row order
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self.steps = 0  # decode steps run (for tests and metrics)
        self.max_batch = 0  # most rows stepped together so far
        self.trimmed = 0  # cache columns dropped after longer rows left
        self.tokens_out = 0  # ids decoded, all rows together (metrics: the decoder's own rate)
        self.busy_seconds = 0.0  # wall time spent prefilling and stepping
        self.prefill_seconds = 0.0  # of which prefilling
        self.prefill_rows = 0  # prompts prefilled
        self.prefill_positions = 0  # their positions

    # ------------------------------------------------------------------ API
    def submit(self, key: str, spec, conf, embeds: torch.Tensor, on_event: Callable,
               cancel: Optional[threading.Event] = None) -> Ticket:
        """Queue one request (its prompt embeds (L, D), e.g. `Decoder.prompt`); `on_event(kind,
        value)` is called from the loop's thread: ("token", (phase, id)) for every id, then once
        ("done", Hypothesis) (`.cancelled` on the row says whether it was cut) or ("error", message)."""
        ticket = Ticket(self.rows_maker.start_row(key, spec, conf), embeds, on_event, cancel)
        with self._lock:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self._pending.append(ticket)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="osum-decode-loop", daemon=True)
                self._thread.start()
            self._lock.notify_all()
        return ticket

    @property
    def running(self) -> bool:
        """The loop thread is alive (it starts with the first request)."""
        return self._thread is not None and self._thread.is_alive()

    def active_rows(self) -> int:
        """Rows in the running batch now."""
        with self._lock:
            return len(self._active)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop: queued and running requests end with an "error" event."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # ------------------------------------------------------------------ loop
    def _loop(self) -> None:
        batch = None
        torch.set_grad_enabled(False)
        while True:
            with self._lock:
                while not self._closed and not self._pending and not self._active:
                    self._lock.wait()
                if self._closed:
                    for t in self._pending + self._active:
                        t._finish("error", "scheduler_closed: the decode loop was stopped")
                    self._pending, self._active = [], []
                    return
                room = self.max_rows - len(self._active)
                admit, self._pending = self._pending[:room], self._pending[room:]
            t0 = time.perf_counter()
            try:
                batch = self._admit(batch, admit)
                batch = self._drop_cancelled(batch)
                if batch is not None and batch.rows:
                    self._step(batch)
                if batch is not None and not batch.rows:
                    batch = None  # the cache of the last rows goes; the next request starts a fresh one
            except Exception as e:  # noqa: BLE001 - a failed step ends the rows in it, not the loop
                log.exception("decode step failed; its row(s) end with an error")
                with self._lock:
                    failed, self._active = self._active, []
                for t in failed + admit:
                    t._finish("error", f"decode_error: {type(e).__name__}: {e}")
                batch = None
            self.busy_seconds += time.perf_counter() - t0

    def _admit(self, batch: Optional[DecodeBatch], tickets: list) -> Optional[DecodeBatch]:
        for t in tickets:
            if t.cancelled:
                t.row.cancelled = True
                t._finish("done", hypothesis(self.vocab, t.row))
                continue
            try:
                t0 = time.perf_counter()
                new = DecodeBatch.prefill(self.vocab, [t.row], [t.embeds])
                self.prefill_seconds += time.perf_counter() - t0
                self.prefill_rows += 1
                self.prefill_positions += len(t.embeds)
            except Exception as e:  # noqa: BLE001 - one broken request must not stop the others
                log.exception("prefill of %s failed", t.key)
                t._finish("error", f"decode_error: {type(e).__name__}: {e}")
                continue
            t.embeds = None
            if batch is None:
                batch = new
            else:
                batch.join(new)
            with self._lock:
                self._active.append(t)
                self.max_batch = max(self.max_batch, len(self._active))
        return batch

    def _drop_cancelled(self, batch: Optional[DecodeBatch]) -> Optional[DecodeBatch]:
        if batch is None:
            return None
        with self._lock:
            gone = [t for t in self._active if t.cancelled]
            if not gone:
                return batch
            self._active = [t for t in self._active if not t.cancelled]
        for t in gone:
            t.row.cancelled = True
        batch.keep([j for j, row in enumerate(batch.rows) if not row.cancelled])
        self.trimmed += batch.trim(TRIM_COLUMNS)
        for t in gone:
            t._finish("done", hypothesis(self.vocab, t.row))
        return batch

    def _step(self, batch: DecodeBatch) -> None:
        model = self.model
        with self._lock:
            tickets = list(self._active)
        if self._linears is None:  # once: the walk over the model's modules costs about a tiny step
            self._linears = eligible_linears([model.base_llm().model, model.lm_head, model.speech_head])
        with packed_linears((), self.packed_weights, len(batch.rows), self._linears):
            out = batch.step()
        self.steps += 1
        self.tokens_out += len(out)
        by_row = {id(t.row): t for t in tickets}
        finished = []
        for row, phase, token in out:
            t = by_row[id(row)]
            try:
                t.on_event("token", (phase, token))
            except Exception:  # noqa: BLE001 - a consumer's bug cancels its own request only
                log.exception("on_event of %s failed; the request is cancelled", t.key)
                t.cancel()
            if row.state.done:
                finished.append(t)
        if finished:
            self.trimmed += batch.trim(TRIM_COLUMNS)
            with self._lock:
                self._active = [t for t in self._active if not t.row.state.done]
            for t in finished:
                t._finish("done", hypothesis(self.vocab, t.row))
