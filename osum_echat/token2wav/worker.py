"""token2wav in a process of its own, for a server that streams many utterances at once.

    worker = VoiceWorker("exp/demo/token2wav_tiny", device="cpu")   # loads its own copy of the model
    voice = worker.open(prompt, events, cancel)                   # the voice.py interface
    voice.push(code) ...; voice.finish()
    events.get() -> ("audio", ndarray) ..., ("voice_end", error or None)
    worker.close()

Why a process: the LLM's decode loop and token2wav are both many small torch ops driven from
Python. In one process they share one interpreter lock, and every op of the decode step waits for
token2wav's threads to let go of it: measured with the tiny demo models on 2 cores, a decode step of
2 rows took 6.2 ms beside 4 streams' token2wav threads against 1.6 ms for 1 row alone
(bench/bench_realtime.py). Here the worker has its own interpreter and the operating system shares
the cores; inside it, every utterance keeps its thread and the aligned flow windows of concurrent
utterances are still solved as one batch (batching.SolveBatcher), as in-process.

Messages over one duplex pipe: ("open", sid, prompt), ("codes", sid, [ids of a window]), ("end", sid),
("stop", sid), ("close",) to the worker; ("ready", (sample_rate, StreamConfig fields)) | ("fatal",
message) once, then ("audio", sid,
samples) and ("voice_end", sid, (error, busy s, first packet s, (solves, windows solved))) back.
A worker that dies ends the utterances in flight with an error (their text stands) and is started
again by the next `open`.
"""
from __future__ import annotations

import dataclasses
import itertools
import multiprocessing as mp
import os
import threading
from typing import Optional

from osum_echat.token2wav.streaming import StreamConfig, window_ends
from osum_echat.utils import get_logger

log = get_logger("osum_echat.voice_worker")

START_TIMEOUT_S = 600.0  # loading a full-size token2wav from a slow disk
CLOSE_TIMEOUT_S = 5.0


class RemoteVoice:
    """One utterance rendered by the worker (the voice.py interface). Codes go over in one message
    per window (the worker's window schedule, streaming.window_ends): the worker renders a window
    only once all its codes are there, so sending each code as it comes would only wake both
    processes ~25 times a second per utterance for nothing."""

    def __init__(self, worker: "VoiceWorker", sid: int, prompt, events, cancel: threading.Event):
        self.worker, self.sid, self.prompt, self.events, self.cancel = worker, sid, prompt, events, cancel
        self.started = False
        self.ended = threading.Event()
        self.busy = 0.0
        self.first_packet: Optional[float] = None  # measured in the worker
        self._pending: list = []
        self._sent = 0
        self._ends = window_ends(worker.stream_config)
        self._next_end = next(self._ends)

    def push(self, code: int) -> None:
        if self.ended.is_set():
            return
        if not self.started:  # the worker sets the stream up (thread, prompt) while the codes come
            self.started = True
            self.worker._open(self)
        self._pending.append(int(code))
        if self._sent + len(self._pending) >= self._next_end:
            self._flush()
            while self._next_end <= self._sent:
                self._next_end = next(self._ends)

    def _flush(self) -> None:
        if self._pending:
            codes, self._pending = self._pending, []
            self._sent += len(codes)
            self.worker._send(self, ("codes", self.sid, codes))

    def finish(self) -> None:
        if self.started:
            self._flush()
            self.worker._send(self, ("end", self.sid))

    def stop(self) -> None:
        if self.started and not self.ended.is_set():
            self.worker._send(self, ("stop", self.sid))

    @property
    def running(self) -> bool:
        return self.started and not self.ended.is_set()

    def join(self) -> None:
        self.ended.wait()

    def _end(self, error: Optional[str], busy: float = 0.0, first_packet: Optional[float] = None) -> None:
        if not self.ended.is_set():
            self.busy, self.first_packet = busy, first_packet
            self.ended.set()
            self.events.put(("voice_end", error))


class VoiceWorker:
    def __init__(self, model_dir, device="cpu", dtype: str = "float32", nice: int = 0,
                 threads: Optional[int] = None, start_timeout: float = START_TIMEOUT_S, estimator: str = "auto"):
        """Starts the process and waits until it has loaded `model_dir` (ValueError if it cannot).
        `nice`: added to the worker's scheduling niceness (> 0: the LLM's process goes first);
        `threads`: its torch threads (default: half of this process's, at least 1 - the two
        processes share the cores); `estimator`: the flow estimator's backend (onnx_estimator.py)."""
        self.model_dir, self.device, self.dtype, self.nice = str(model_dir), str(device), dtype, nice
        self.estimator_choice = estimator
        self.estimator: Optional[str] = None  # the backend the process loaded, from its "ready" message
        self.threads = threads or default_threads()
        self.start_timeout = start_timeout
        self._lock = threading.Lock()  # the pipe's sending end, the stream table, (re)starting
        self._streams: dict = {}
        self._ids = itertools.count()
        self._conn = self._proc = None
        self.restarts = -1
        self.sample_rate: Optional[int] = None
        self.stream_config = StreamConfig()  # the worker's, from its "ready" message
        self.solves = self.solve_rows = 0  # the worker's batched ODE solves and the windows in them
        with self._lock:
            self._start()

    # ------------------------------------------------------------------ API
    def open(self, prompt, events, cancel: threading.Event) -> RemoteVoice:
        return RemoteVoice(self, next(self._ids), prompt, events, cancel)

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    def close(self) -> None:
        with self._lock:
            conn, proc, self._conn, self._proc = self._conn, self._proc, None, None
        if conn is not None:
            try:
                conn.send(("close",))
            except OSError:
                pass
        if proc is not None:
            proc.join(CLOSE_TIMEOUT_S)
            if proc.is_alive():
                proc.terminate()
                proc.join(CLOSE_TIMEOUT_S)

    # ------------------------------------------------------------------ parent side
    def _start(self) -> None:
        """(Re)start the process; the caller holds the lock."""
        ctx = mp.get_context("spawn")  # fork would copy a process whose torch threads are running
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker_main, args=(child, self.model_dir, self.device, self.dtype, self.nice,
                                                         self.threads, self.estimator_choice),
                           name="osum-token2wav-worker", daemon=True)
        proc.start()
        child.close()
        try:
            if not parent.poll(self.start_timeout):
                raise RuntimeError(f"the token2wav worker did not load {self.model_dir} in {self.start_timeout:.0f} s")
            kind, value = parent.recv()
        except (EOFError, OSError):
            proc.join(CLOSE_TIMEOUT_S)
            raise RuntimeError(f"the token2wav worker exited while loading {self.model_dir} "
                               f"(exit code {proc.exitcode}); see the log above") from None
        except BaseException:
            proc.terminate()
            raise
        if kind != "ready":
            proc.join(CLOSE_TIMEOUT_S)
            raise ValueError(value)
        (self.sample_rate, conf, self.estimator), self._conn, self._proc = value, parent, proc
        self.stream_config = StreamConfig(**conf)
        self.restarts += 1
        threading.Thread(target=self._read, args=(parent, proc), name="osum-voice-reader", daemon=True).start()

    def _open(self, voice: RemoteVoice) -> None:
        with self._lock:
            if not self.alive:
                try:
                    log.warning("the token2wav worker is not running: starting it again")
                    self._start()
                except Exception as e:  # noqa: BLE001 - this utterance loses its audio, its text stands
                    log.error("token2wav worker restart failed: %s", e)
                    voice._end(f"token2wav worker unavailable: {e}")
                    return
            self._streams[voice.sid] = voice
        self._send(voice, ("open", voice.sid, voice.prompt))

    def _send(self, voice: RemoteVoice, msg: tuple) -> None:
        with self._lock:
            conn = self._conn if voice.sid in self._streams else None
            if conn is not None:
                try:
                    conn.send(msg)
                    return
                except OSError:  # the worker is gone; its reader ends the other streams
                    self._streams.pop(voice.sid, None)
        voice._end("token2wav worker exited: the audio is cut")

    def _read(self, conn, proc) -> None:
        """Route the worker's packets to their streams until its pipe closes."""
        while True:
            try:
                kind, sid, value = conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # noqa: BLE001 - an unreadable message: skip it, keep reading
                log.exception("unreadable message from the token2wav worker")
                continue
            with self._lock:
                voice = self._streams.get(sid) if kind == "audio" else self._streams.pop(sid, None)
            if voice is None:
                continue
            if kind == "audio":
                if not voice.cancel.is_set():
                    voice.events.put(("audio", value))
            else:
                error, busy, first_packet, (self.solves, self.solve_rows) = value
                voice._end(error, busy, first_packet)
        proc.join(CLOSE_TIMEOUT_S)
        with self._lock:
            if self._proc is proc:  # not a close(): the worker died
                log.error("the token2wav worker exited (exit code %s); utterances in flight lose the rest of "
                          "their audio", proc.exitcode)
                self._conn = self._proc = None
            orphans = [v for sid, v in list(self._streams.items())]
            self._streams.clear()
        for voice in orphans:
            voice._end(f"token2wav worker exited (exit code {proc.exitcode}): the audio is cut")


# ---------------------------------------------------------------------- the worker process

class _Outbox:
    """A LocalVoice's events, sent to the parent tagged with the stream id."""

    def __init__(self, sid: int, send, voices: dict, batcher):
        self.sid, self.send, self.voices, self.batcher, self.voice = sid, send, voices, batcher, None

    def put(self, item) -> None:
        kind, value = item
        if kind == "voice_end":
            self.voices.pop(self.sid, None)
            voice = self.voice
            value = (value, voice.busy if voice else 0.0, voice.first_packet if voice else None,
                     (self.batcher.solves, self.batcher.rows))
        self.send((kind, self.sid, value))


def default_threads() -> int:
    import torch

    return max(1, torch.get_num_threads() // 2)


def worker_main(conn, model_dir: str, device: str, dtype: str, nice: int, threads: int,
                estimator: str = "auto") -> None:
    import torch

    torch.set_num_threads(threads)
    from osum_echat.token2wav import Token2Wav
    from osum_echat.token2wav.batching import SolveBatcher
    from osum_echat.token2wav.voice import LocalVoice

    if nice:
        os.nice(nice)
    torch.set_grad_enabled(False)
    lock = threading.Lock()

    def send(msg) -> None:
        with lock:
            try:
                conn.send(msg)
            except OSError:  # the parent is gone: the receive loop ends too
                pass

    try:
        if device.startswith("npu"):  # a spawned process has not registered the NPU backend yet
            from osum_echat.train.devices import device_type
            device_type("npu")
        t2w = Token2Wav.from_dir(model_dir, device=device, dtype=getattr(torch, dtype))
        backend = t2w.use_estimator(estimator, threads)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which fails with it
        send(("fatal", f"token2wav worker: {type(e).__name__}: {e}"))
        return
    batcher = SolveBatcher(t2w)
    voices: dict = {}
    send(("ready", (t2w.sample_rate, dataclasses.asdict(StreamConfig()), backend)))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        op = msg[0]
        if op == "close":
            break
        sid = msg[1]
        if op == "open":
            out = _Outbox(sid, send, voices, batcher)
            out.voice = voices[sid] = LocalVoice(t2w, msg[2], out, threading.Event(), batcher)
            out.voice.start()
            continue
        voice = voices.get(sid)
        if voice is None:  # stopped already
            continue
        if op == "codes":
            for code in msg[2]:
                voice.push(code)
        elif op == "end":
            voice.finish()
        elif op == "stop":
            voice.cancel.set()
            voice.stop()
