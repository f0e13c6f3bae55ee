"""The loaded pipeline as the server sees it: one request -> a stream of events, runnable from asyncio.

    engine = Engine(pipe)
    async for ev in engine.aevents("<S2TCHAT> <TEXT2TOKEN>", wav=wav_bytes, cancel=threading.Event()):
        ev["type"]  # think_delta {text} | text_delta {text} | speech_tokens {tokens}
                    # | audio {samples: float32 ndarray, sample_rate} | done {result: Result, cancelled: bool}

Requests run in worker threads. `ChatPipeline.stream` (the decoder's own streaming, shared by all
sessions) is used when the pipeline has it; otherwise `_events_from_run` stands in: it decodes the
whole request with `ChatPipeline.run` under a lock (one request at a time) and then replays the
result as events, the audio cut into windows, so the protocol above it is the same.
"""
from __future__ import annotations

import asyncio
import threading
from typing import AsyncIterator, Iterator, Optional

import numpy as np

from osum_echat.infer.runtime import ChatPipeline, Result

REPLAY_WINDOW_SECONDS = 0.24  # audio window of the stand-in replay


class Engine:
    def __init__(self, pipe: ChatPipeline):
        self.pipe = pipe
        self._lock = threading.Lock()  # ChatPipeline.run is not re-entrant

    @property
    def audio_on(self) -> bool:
        return self.pipe.token2wav is not None

    @property
    def output_rate(self) -> Optional[int]:
        return self.pipe.token2wav.sample_rate if self.pipe.token2wav is not None else None

    @property
    def input_rate(self) -> int:
        return self.pipe.sample_rate

    # -------------------------------------------------------------- blocking
    def run(self, task: str, **kw) -> Result:
        """Whole request (REST): ChatInputError on bad input."""
        with self._lock:
            return self.pipe.run(task, **kw)

    def events(self, task: str, *, cancel: Optional[threading.Event] = None, **kw) -> Iterator[dict]:
        cancel = cancel or threading.Event()
        stream = getattr(self.pipe, "stream", None)
        if stream is not None:
            yield from stream(task, cancel=cancel, **kw)
        else:
            yield from self._events_from_run(task, cancel, **kw)

    def _events_from_run(self, task: str, cancel: threading.Event, variant: Optional[str] = None,
                         **kw) -> Iterator[dict]:
        with self._lock:
            if variant is not None:
                self.pipe.use_variant(variant)
            result = self.pipe.run(task, **kw)
        if result.think and not cancel.is_set():
            yield {"type": "think_delta", "text": result.think}
        if result.text and not cancel.is_set():
            yield {"type": "text_delta", "text": result.text}
        if result.speech_tokens and not cancel.is_set():
            yield {"type": "speech_tokens", "tokens": list(result.speech_tokens)}
        if result.audio is not None and result.audio.numel():
            audio = result.audio.numpy().astype(np.float32)
            step = max(1, int(REPLAY_WINDOW_SECONDS * result.sample_rate))
            for start in range(0, len(audio), step):
                if cancel.is_set():
                    break
                yield {"type": "audio", "samples": audio[start:start + step], "sample_rate": result.sample_rate}
        yield {"type": "done", "result": result, "cancelled": cancel.is_set()}

    # -------------------------------------------------------------- asyncio
    async def arun(self, task: str, **kw) -> Result:
        return await asyncio.to_thread(self.run, task, **kw)

    async def aevents(self, task: str, *, cancel: threading.Event, **kw) -> AsyncIterator[dict]:
        """`events` in a worker thread; an exception in the request is raised here."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        end = object()

        def work():
            try:
                for ev in self.events(task, cancel=cancel, **kw):
                    loop.call_soon_threadsafe(queue.put_nowait, ev)
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting side
                loop.call_soon_threadsafe(queue.put_nowait, e)
            loop.call_soon_threadsafe(queue.put_nowait, end)

        loop.run_in_executor(None, work)
        try:
            while True:
                ev = await queue.get()
                if ev is end:
                    break
                if isinstance(ev, BaseException):
                    raise ev
                yield ev
        finally:
            cancel.set()  # the consumer left early: the request stops at its next step
