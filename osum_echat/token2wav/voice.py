"""One streamed utterance's token2wav, fed speech codes as the LLM decodes them.

    voice = LocalVoice(t2w, prompt, events, cancel, batcher)    # or VoiceWorker.open(...) (worker.py)
    voice.push(code) ...; voice.finish()                      # or voice.stop(): cut at the next window
    events.get() -> ("audio", float32 ndarray) ..., then once ("voice_end", error message or None)

`LocalVoice` renders in a thread of this process. Both kinds share this interface: `push`, `finish`,
`stop`, `started`, `running`, `join()`, `busy` (seconds spent rendering) and `first_packet`
(seconds from the first code to the first packet).
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import Optional

from osum_echat.utils import get_logger

log = get_logger("osum_echat.voice")


class _Stop(Exception):
    pass


class LocalVoice:
    """token2wav in a thread of its own; its packets and its end go to `events` (anything with a
    `put`)."""

    END = object()
    STOP = object()

    def __init__(self, t2w, prompt, events, cancel: threading.Event, batcher=None):
        self.t2w, self.prompt, self.events, self.cancel = t2w, prompt, events, cancel
        self.batcher = batcher  # token2wav/batching.SolveBatcher shared by the concurrent streams
        self.codes: queue.Queue = queue.Queue()
        self.thread: Optional[threading.Thread] = None
        self.busy = 0.0  # seconds spent rendering
        self.opened_at: Optional[float] = None  # first code pushed
        self.first_audio_at: Optional[float] = None
        self.audio_s = 0.0  # seconds of audio sent

    @property
    def first_packet(self) -> Optional[float]:
        """Seconds from the first code to the first packet (None before it)."""
        return None if self.first_audio_at is None else self.first_audio_at - self.opened_at

    def deadline(self) -> float:
        """When the listener runs out of audio (batching.py renders the earliest first): the first
        packet's time plus the audio sent since; before the first packet, when the stream opened."""
        return self.opened_at if self.first_audio_at is None else self.first_audio_at + self.audio_s

    def start(self) -> None:
        """Start rendering (the first `push` does it too): the stream's set-up runs before its codes."""
        if self.thread is None:
            self.opened_at = time.perf_counter()
            self.thread = threading.Thread(target=self._run, name="osum-token2wav", daemon=True)
            self.thread.start()

    def push(self, code: int) -> None:
        self.start()
        self.codes.put(code)

    def finish(self) -> None:
        self.codes.put(self.END)

    def stop(self) -> None:
        self.codes.put(self.STOP)

    @property
    def started(self) -> bool:
        return self.thread is not None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def join(self) -> None:
        """After "voice_end": its last put is done (a thread still unwinding at exit can abort it)."""
        if self.thread is not None:
            self.thread.join()

    def _tokens(self):
        while True:
            code = self.codes.get()
            if code is self.END:
                return
            if code is self.STOP or self.cancel.is_set():
                raise _Stop
            yield code

    def _run(self) -> None:
        error = None
        try:
            with self.batcher.stream(self.deadline) if self.batcher is not None else contextlib.nullcontext() as turns:
                hooks = {"solver": turns.solve, "gate": turns.turn} if turns is not None else {}
                t0 = time.perf_counter()
                for chunk in self.t2w.stream(self._tokens(), prompt=self.prompt, **hooks):
                    self.busy += time.perf_counter() - t0
                    if self.cancel.is_set():
                        break
                    if self.first_audio_at is None:
                        self.first_audio_at = time.perf_counter()
                    self.audio_s += len(chunk) / self.t2w.sample_rate
                    self.events.put(("audio", chunk.float().cpu().numpy()))
                    t0 = time.perf_counter()
        except _Stop:
            pass
        except Exception as e:  # noqa: BLE001 - reported as a note, the text still stands
            log.exception("token2wav failed")
            error = f"{type(e).__name__}: {e}"
        self.events.put(("voice_end", error))
