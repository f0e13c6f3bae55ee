"""A session's responses: run one request on the engine and turn its events into Realtime events.

    responder.start(user_input)        # response.created ... response.done, as an asyncio task
    await responder.cancel("turn_detected" | "client_cancelled")
    responder.truncate(item_id, audio_end_ms)

Cancel stops the request (the engine sees the cancel event at its next step or window) and stops
sending at once: the response task's consumer is cancelled, so no delta of that response follows
its response.done (status cancelled). The conversation keeps the user's turn and the part of the
answer that was sent: the transcript sent, the speech tokens whose audio was sent.
"""
from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from typing import Optional

import numpy as np

from osum_echat.infer.runtime import ChatInputError, Turn
from osum_echat.serve import protocol as P
from osum_echat.serve.audio import OUTPUT_RATE, StreamResampler, encode_pcm16
from osum_echat.utils import get_logger

log = get_logger("osum_echat.serve")


@dataclasses.dataclass
class UserInput:
    item_id: str
    wav: Optional[bytes] = None  # a 16 kHz wav file in memory
    text: Optional[str] = None
    seconds: float = 0.0
    committed_at: float = 0.0  # perf_counter at the end of the user's speech (commit)


@dataclasses.dataclass
class Response:
    id: str
    item_id: str
    user: UserInput
    audio: bool  # output_audio (transcript + audio) or output_text
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    reason: Optional[str] = None
    think: str = ""
    text: str = ""
    tokens: list = dataclasses.field(default_factory=list)
    samples_sent: int = 0  # at token2wav's rate
    result: object = None
    failure: Optional[dict] = None
    first_text: Optional[float] = None
    first_audio: Optional[float] = None
    history_note: str = ""
    config: object = None  # the SessionConfig of this response (the session's, with response.create's fields)
    out_of_band: bool = False  # response.create conversation "none": no history in, nothing kept
    client_metadata: dict = dataclasses.field(default_factory=dict)
    consumer: Optional[asyncio.Task] = None
    task: Optional[asyncio.Task] = None


class Responder:
    def __init__(self, session, emit, emit_wait):
        self.session, self.emit, self.emit_wait = session, emit, emit_wait
        self.current: Optional[Response] = None
        self.turns: dict = {}  # assistant item id -> (Turn kept as history, speech tokens the answer had)

    @property
    def active(self) -> bool:
        return self.current is not None

    def start(self, user: UserInput, config=None, out_of_band: bool = False, metadata: Optional[dict] = None) -> None:
        """Answer `user`; `config`: this response's SessionConfig (default: the session's);
        `out_of_band`: decoded without the conversation's history and not added to it; `metadata`:
        the client's, echoed in response.metadata beside the server's timings."""
        s = self.session
        s.pending = None
        previous = self.current.task if self.current else None
        config = config or s.config
        resp = Response(P.new_id("resp"), P.new_id("item"), user, audio=config.speaks, config=config,
                        out_of_band=out_of_band, client_metadata=dict(metadata or {}))
        self.current = resp
        resp.task = asyncio.create_task(self._run(resp, previous))

    async def cancel(self, reason: str) -> None:
        resp = self.current
        if resp is None:
            return
        resp.reason = reason
        resp.cancel.set()
        if resp.consumer is not None:  # running: its response.done goes out before this returns
            resp.consumer.cancel()
            await asyncio.shield(resp.task)
        # else it still waits for the response before it: it will only say created + done (cancelled)

    async def shutdown(self) -> None:
        resp = self.current
        if resp is not None:
            resp.reason = "client_cancelled"
            resp.cancel.set()
            if resp.consumer is not None:
                resp.consumer.cancel()
            resp.task.cancel()

    def truncate(self, item_id, audio_end_ms: int) -> bool:
        if item_id not in self.turns:
            return False
        turn, all_tokens, all_text = self.turns[item_id]
        t2w = self.session.engine.pipe.token2wav
        samples = audio_end_ms * (t2w.sample_rate if t2w else OUTPUT_RATE) // 1000
        keep = _tokens_within(t2w, all_tokens, samples)
        turn.speech_tokens = list(all_tokens[:keep])
        if all_tokens:  # the transcript heard, in proportion (the text is said over the speech tokens)
            turn.text = all_text[:round(len(all_text) * keep / len(all_tokens))]
        return True

    # -------------------------------------------------------------- one response
    async def _run(self, resp: Response, previous: Optional[asyncio.Task]) -> None:
        if previous is not None:
            await asyncio.shield(previous)
        s = self.session
        modalities = resp.config.modalities
        item = P.assistant_item(resp.item_id, "in_progress", audio=resp.audio)
        prev_item = s.items[-1] if s.items else None
        s.items.append(resp.item_id)
        self.emit(P.response_created(P.response(resp.id, "in_progress", modalities=modalities)))
        self.emit(P.output_item_added(resp.id, 0, item))
        self.emit(P.item_created(item, prev_item))
        self.emit(P.content_part_added(resp.id, resp.item_id, resp.audio))
        try:
            if resp.reason is None:  # not cancelled while it waited for the response before it
                resp.consumer = asyncio.create_task(self._consume(resp))
                await resp.consumer
        except asyncio.CancelledError:
            if resp.reason is None:
                raise  # the session is closing
        except ChatInputError as e:
            resp.failure = {"type": "invalid_request_error", "code": e.reason, "message": str(e)}
        except Exception as e:  # noqa: BLE001 - a failed request fails its response, not the server
            log.exception("response %s failed", resp.id)
            resp.failure = {"type": "server_error", "code": "server_error", "message": f"{type(e).__name__}: {e}"}
        self._finish(resp, modalities, prev_item)
        if self.current is resp:
            self.current = None

    async def _consume(self, resp: Response) -> None:
        s = self.session
        user, config = resp.user, resp.config
        history, resp.history_note = [], ""
        if user.wav and not resp.out_of_band:  # off the event loop: the first estimate runs the encoder once
            history, resp.history_note = await asyncio.to_thread(s.conversation.history_for, user.seconds)
        kw = dict(wav=user.wav, text=user.text, history=history or None, key=f"{s.id}-{len(s.items)}",
                  **config.decode)
        if config.max_output_tokens and "max_total_tokens" not in config.decode:
            kw["max_total_tokens"] = config.max_output_tokens
        if config.instructions and config.spec.uses_prompt and config.spec.speech_input:
            kw["prompt"] = config.instructions
        if config.variant:
            kw["variant"] = config.variant
        if config.voice in s.engine.voices:
            kw["voice"] = config.voice
        resample = None
        async for ev in s.engine.aevents(config.task, cancel=resp.cancel, **kw):
            kind = ev["type"]
            if kind == "think_delta" and ev["text"]:
                resp.think += ev["text"]
                self.emit(P.think_delta(resp.id, resp.item_id, ev["text"]))
            elif kind == "text_delta" and ev["text"]:
                if resp.first_text is None:
                    resp.first_text = time.perf_counter()
                    s.metrics.first_text.observe(resp.first_text - user.committed_at)
                resp.text += ev["text"]
                make = P.transcript_delta if resp.audio else P.text_delta
                self.emit(make(resp.id, resp.item_id, ev["text"]))
            elif kind == "speech_tokens":
                resp.tokens.extend(ev["tokens"])
            elif kind == "audio" and resp.audio:
                resample = resample or StreamResampler(ev["sample_rate"], resp.config.output_rate)
                pcm = resample(ev["samples"])
                if len(pcm):
                    await self.emit_wait(P.audio_delta(resp.id, resp.item_id, encode_pcm16(pcm)))
                    if resp.first_audio is None:
                        resp.first_audio = time.perf_counter()
                        s.metrics.first_audio.observe(resp.first_audio - user.committed_at)
                resp.samples_sent += len(ev["samples"])
            elif kind == "done":
                resp.result = ev["result"]
        if resample is not None:
            tail = resample(np.zeros(0, np.float32), last=True)
            if len(tail):
                await self.emit_wait(P.audio_delta(resp.id, resp.item_id, encode_pcm16(tail)))

    def _finish(self, resp: Response, modalities: list, prev_item) -> None:
        s = self.session
        result = resp.result
        if resp.failure:
            status = "failed"
        elif resp.reason is not None:  # set by cancel(); the engine's event is also set when a stream ends
            status = "cancelled"
        elif result is not None and any(n.startswith("stopped at") for n in result.notes):
            status, resp.reason = "incomplete", "max_output_tokens"
        else:
            status = "completed"
        t2w = s.engine.pipe.token2wav
        kept = resp.tokens if status != "cancelled" else resp.tokens[:_tokens_within(t2w, resp.tokens,
                                                                                         resp.samples_sent)]
        if resp.think:
            self.emit(P.think_done(resp.id, resp.item_id, resp.think))
        if resp.audio:
            self.emit(P.audio_done(resp.id, resp.item_id))
            self.emit(P.transcript_done(resp.id, resp.item_id, resp.text))
        else:
            self.emit(P.text_done(resp.id, resp.item_id, resp.text))
        self.emit(P.content_part_done(resp.id, resp.item_id, resp.audio, resp.text))
        item = P.assistant_item(resp.item_id, "completed" if status == "completed" else "incomplete",
                                audio=resp.audio, text=resp.text)
        self.emit(P.output_item_done(resp.id, 0, item))
        self.emit(P.item_done(item, prev_item))
        if resp.user.wav is not None and status != "failed" and not resp.out_of_band:
            turn = Turn(resp.user.wav, resp.text, list(kept), resp.user.seconds)
            conv = s.conversation
            conv.turns.append(turn)
            self.turns[resp.item_id] = (turn, list(kept), resp.text)
            for old in conv.turns[:-conv.max_turns] if conv.max_turns > 0 else conv.turns:
                old.user_audio = b""  # never shown again (only the last max_turns are): free its audio
        result = resp.result
        input_tokens = result.input_tokens if result is not None else 0  # the prompt's positions
        text_tokens = result.text_tokens if result is not None else 0  # text ids decoded (not re-tokenized)
        usage = {"total_tokens": input_tokens + text_tokens + len(resp.tokens), "input_tokens": input_tokens,
                 "output_tokens": text_tokens + len(resp.tokens),
                 "output_token_details": {"text_tokens": text_tokens, "audio_tokens": len(resp.tokens)}}
        self.emit(P.response_done(P.response(resp.id, status, modalities=modalities, output=[item], usage=usage,
                                             metadata=self._metadata(resp), reason=resp.reason,
                                             error_=resp.failure)))
        s.metrics.turns.labels("realtime", status).inc()
        if resp.failure:
            s.metrics.errors.labels(resp.failure["code"]).inc()

    def _metadata(self, resp: Response) -> dict:
        s, t0 = self.session, resp.user.committed_at
        now = time.perf_counter()
        meta = {**resp.client_metadata, "task": resp.config.task,
                "end_of_speech_to_done_ms": f"{(now - t0) * 1000:.1f}"}
        if resp.first_text is not None:
            meta["end_of_speech_to_first_text_ms"] = f"{(resp.first_text - t0) * 1000:.1f}"
        if resp.first_audio is not None:
            meta["end_of_speech_to_first_audio_ms"] = f"{(resp.first_audio - t0) * 1000:.1f}"
        result = resp.result
        if result is not None:
            meta["history_turns"] = str(result.history_turns)
            for k, v in result.timings.items():
                meta[f"{k}_ms"] = f"{v * 1000:.1f}"
            notes = list(result.notes) + ([resp.history_note] if resp.history_note else [])
            if notes:
                meta["notes"] = "; ".join(notes)
        meta["speech_tokens"] = str(len(resp.tokens))
        return meta


def _tokens_within(t2w, tokens: list, samples: int) -> int:
    """How many leading speech tokens the first `samples` of their audio hold."""
    if t2w is None or not tokens:
        return 0
    n = 0
    while n < len(tokens) and t2w.num_samples(n + 1) <= samples:
        n += 1
    return n
