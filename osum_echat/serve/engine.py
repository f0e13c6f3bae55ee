"""The loaded pipeline as the server sees it: one request -> a stream of events, runnable from asyncio.

    engine = Engine(pipe)
    async for ev in engine.aevents("<S2TCHAT> <TEXT2TOKEN>", wav=wav_bytes, cancel=threading.Event()):
        ev["type"]  # think_delta {text} | text_delta {text} | speech_tokens {tokens}
                    # | audio {samples: float32 ndarray, sample_rate} | done {result: Result}

Every request, REST or realtime, goes through `ChatPipeline.stream`: the pipeline's scheduler
decodes concurrent requests as one batch (continuous batching), and token2wav renders each
response's windows while its LLM row keeps decoding. Streams are consumed in worker threads.
"""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import AsyncIterator, Iterator, Optional

from osum_echat.infer.runtime import ChatInputError, ChatPipeline, Result


class Engine:
    def __init__(self, pipe: ChatPipeline, voices_dir: Optional[str] = None):
        """`voices_dir`: NAME.wav speaker prompts a session picks with audio.output.voice NAME."""
        self.pipe = pipe
        self.voices = {p.stem: str(p) for p in sorted(Path(voices_dir).glob("*.wav"))} if voices_dir else {}
        self._variant_lock = threading.Lock()
        self._running = 0  # requests in flight (a weight variant can only be switched with none)

    @property
    def audio_on(self) -> bool:
        return self.pipe.token2wav is not None

    @property
    def variants(self) -> tuple:
        return tuple(self.pipe.variants.paths) if getattr(self.pipe, "variants", None) else ()

    # -------------------------------------------------------------- blocking
    def events(self, task: str, *, cancel: Optional[threading.Event] = None, variant: Optional[str] = None,
               voice: Optional[str] = None, **kw) -> Iterator[dict]:
        """The request's events as dicts (ChatInputError on bad input, from the first next()).
        `voice`: a name of `voices` (else the server's speaker prompt)."""
        cancel = cancel or threading.Event()
        if voice in self.voices and self.audio_on:
            kw["speaker_prompt"] = self.pipe.token2wav.prompt_from_wav(self.voices[voice])  # cached per file
        self._enter(variant)
        try:
            for ev in self.pipe.stream(task, cancel=cancel, **kw):
                yield {"type": ev.kind, "text": ev.text, "tokens": list(ev.tokens), "samples": ev.audio,
                       "sample_rate": ev.sample_rate, "result": ev.result}
        finally:
            with self._variant_lock:
                self._running -= 1

    def _enter(self, variant: Optional[str]) -> None:
        """Count the request in; switch the weights to `variant` when no other request is decoding."""
        with self._variant_lock:
            if variant is not None and self.pipe.variants.current != variant:
                if self._running:
                    raise ChatInputError("variant_busy", f"{self._running} request(s) are decoding with checkpoint "
                                         f"{self.pipe.variants.current!r}: the weights switch to {variant!r} "
                                         "only between requests; retry when they are done")
                self.pipe.use_variant(variant)
            self._running += 1

    def run(self, task: str, **kw) -> Result:
        """Whole request (REST): the "done" event's Result."""
        for ev in self.events(task, **kw):
            if ev["type"] == "done":
                return ev["result"]
        raise RuntimeError("the stream ended without a done event")

    # -------------------------------------------------------------- asyncio
    async def arun(self, task: str, **kw) -> Result:
        return await asyncio.to_thread(self.run, task, **kw)

    async def aevents(self, task: str, *, cancel: threading.Event, **kw) -> AsyncIterator[dict]:
        """`events` in a worker thread; an exception in the request is raised here. Leaving early
        sets `cancel`: the request stops at its next step."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        end = object()

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the server's loop is closed (shutdown): nobody is waiting
                cancel.set()

        def work():
            try:
                for ev in self.events(task, cancel=cancel, **kw):
                    put(ev)
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting side
                put(e)
            put(end)

        threading.Thread(target=work, name="osum-request", daemon=True).start()
        try:
            while True:
                ev = await queue.get()
                if ev is end:
                    break
                if isinstance(ev, BaseException):
                    raise ev
                yield ev
        finally:
            cancel.set()
