"""One realtime conversation (one WebSocket): input audio buffer, server VAD, turn state, cancel.

    session = RealtimeSession(engine, settings, emit, vad_model)
    await session.handle(message_text)     # every client message, in order
    await session.close()

`emit(event)` queues a server event for the client (never blocks the engine); `emit_wait(event)`
waits for room (audio deltas) and closes a client that does not read. Responses run as asyncio
tasks (responder.py); the session keeps the conversation (infer/conversation.py `Conversation`):
history bounds, and only the part of an answer the client got (or what conversation.item.truncate
says was played) is kept as history.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Callable, Optional

import numpy as np

from osum_echat.infer.conversation import Conversation
from osum_echat.infer.runtime import HELPER_TASKS, ChatInputError
from osum_echat.serve import protocol as P
from osum_echat.serve.audio import WIRE_RATES, AudioInputError, StreamResampler, decode_pcm16, resample, wav_bytes
from osum_echat.serve.responder import Responder, UserInput
from osum_echat.serve.session_config import OSUM_KEY, SessionConfig, SessionUpdateError
from osum_echat.serve.vad import RATE as VAD_RATE
from osum_echat.serve.vad import StreamingVad
from osum_echat.utils import get_logger

log = get_logger("osum_echat.serve")


class ClientError(Exception):
    def __init__(self, code: str, message: str, param: Optional[str] = None):
        super().__init__(message)
        self.code, self.param = code, param


class RealtimeSession:
    def __init__(self, engine, settings, emit: Callable, emit_wait: Callable, vad_model, metrics, model_name: str):
        self.engine, self.settings, self.emit, self.metrics = engine, settings, emit, metrics
        self.id = P.new_id("sess")
        self.model_name = model_name
        self.vad_model = vad_model
        self.variants = engine.variants
        task = settings.task
        if engine.pipe is not None and not engine.audio_on and SessionConfig(task, False).speaks:
            task = HELPER_TASKS["chat"]  # audio output is off: speech in, text out
        self.config = SessionConfig(task=task, audio_on=engine.audio_on)
        self.conversation = Conversation(engine.pipe, task)
        self.responder = Responder(self, emit, emit_wait)
        self.items: list = []  # conversation item ids, in order
        self.pending: Optional[UserInput] = None  # the last user input not answered yet
        self.transcriptions: set = set()  # running input-audio transcriptions (asyncio tasks)
        self.rate_in = WIRE_RATES[0]
        self._reset_buffer()
        self.stream_pos = 0  # 16 kHz samples received since the session started (VAD timeline)
        self.vad: Optional[StreamingVad] = None
        self._new_vad()
        self.next_item_id = P.new_id("item")
        self.speech_start: Optional[int] = None

    # -------------------------------------------------------------- dispatch
    def session_object(self) -> dict:
        return self.config.session_object(self.id, self.model_name, self.variants, tuple(self.engine.voices))

    async def handle(self, text) -> None:
        event_id = None
        try:
            try:
                event = json.loads(text)
            except (ValueError, TypeError):
                raise ClientError("invalid_json", "the message is not valid JSON") from None
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                raise ClientError("invalid_event", "an event must be a JSON object with a string 'type'", "type")
            event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            handler = self.HANDLERS.get(event["type"])
            if handler is None:
                raise ClientError("unknown_event_type", f"event type {event['type']!r} is not served; served: "
                                  f"{', '.join(sorted(self.HANDLERS))}", "type")
            await handler(self, event)
        except ClientError as e:
            self.error(e.code, str(e), event_id, e.param)
        except SessionUpdateError as e:
            self.error(e.code, str(e), event_id, e.param)
        except AudioInputError as e:
            self.error(e.code, str(e), event_id, "audio")
        except Exception as e:  # noqa: BLE001 - a bug met by one event must not end the session
            log.exception("event %s failed", event_id)
            self.error("server_error", f"the server failed on this event ({type(e).__name__}); the session goes on",
                       event_id, type_="server_error")

    def error(self, code: str, message: str, event_id: Optional[str] = None, param: Optional[str] = None,
              type_: str = "invalid_request_error") -> None:
        self.metrics.errors.labels(code).inc()
        self.emit(P.error(code, message, event_id, param, type_))

    # -------------------------------------------------------------- session
    async def on_session_update(self, event) -> None:
        old_vad = self.config.turn_detection
        self.config = self.config.updated(event.get("session"), self.variants, tuple(self.engine.voices))
        self.conversation.task = self.config.task
        if self.config.input_rate != self.rate_in:  # audio buffered at the old rate cannot be continued
            self.rate_in = self.config.input_rate
            self._reset_buffer()
        if self.config.turn_detection != old_vad:
            self._new_vad()
        self.emit(P.session_updated(self.session_object()))

    # -------------------------------------------------------------- input audio
    def _reset_buffer(self) -> None:
        self.resampler = StreamResampler(self.rate_in, VAD_RATE)  # the wire rate -> 16 kHz, one signal a turn
        self.buffer: list = []  # 16 kHz float32 chunks of the current turn
        self.buffer_start = 0  # stream position of buffer[0]
        self.turn_samples_in = 0  # wire-rate samples of the current turn (the 30 s limit)

    def _new_vad(self) -> None:
        td = self.config.turn_detection
        self.vad = None if td is None else StreamingVad(self.vad_model, td["threshold"], td["prefix_padding_ms"],
                                                        td["silence_duration_ms"])
        self.vad_offset = self.stream_pos if hasattr(self, "stream_pos") else 0
        self.speech_start = None

    def _buffered(self) -> np.ndarray:
        return np.concatenate(self.buffer) if self.buffer else np.zeros(0, np.float32)

    async def on_append(self, event) -> None:
        pcm = decode_pcm16(event.get("audio"))
        if not len(pcm):
            return
        self.turn_samples_in += len(pcm)
        if self.turn_samples_in > self.settings.max_turn_audio_s * self.rate_in:
            self._reset_buffer()
            self.buffer_start = self.stream_pos
            self._new_vad()  # a turn that long starts over
            self.emit(P.buffer_cleared())
            raise ClientError("input_audio_too_long", f"the input audio buffer passed {self.settings.max_turn_audio_s:g} s "
                              "for one turn: it was cleared; commit shorter turns", "audio")
        samples = self.resampler(pcm.astype(np.float32) / 32768.0)
        self.buffer.append(samples)
        self.stream_pos += len(samples)
        if self.vad is not None:
            for kind, at in self.vad.push(samples):
                await self._on_vad(kind, at + self.vad_offset)
            if self.speech_start is None:  # keep only what a coming segment may start with
                keep_from = self.stream_pos - self.vad.prefix - 2 * len(samples)
                self._drop_before(keep_from)

    def _drop_before(self, position: int) -> None:
        if position <= self.buffer_start:
            return
        audio = self._buffered()[position - self.buffer_start:]
        self.buffer, self.buffer_start = [audio], position
        self.turn_samples_in = int(len(audio) * self.rate_in / VAD_RATE)

    async def _on_vad(self, kind: str, at: int) -> None:
        ms = at * 1000 // VAD_RATE
        if kind == "start":
            self.speech_start = at
            start = self.vad.segment_start(at - self.vad_offset) + self.vad_offset  # OpenAI: with the padding
            self.emit(P.speech_started(start * 1000 // VAD_RATE, self.next_item_id))
            if self.config.turn_detection.get("interrupt_response") and self.responder.active:
                await self.responder.cancel("turn_detected")
            return
        if self.speech_start is None:  # the buffer was cleared meanwhile
            return
        start = self.vad.segment_start(self.speech_start - self.vad_offset) + self.vad_offset
        self.speech_start = None
        self.emit(P.speech_stopped(ms, self.next_item_id))
        audio = self._buffered()
        segment = audio[max(0, start - self.buffer_start):max(0, at - self.buffer_start)]
        self._drop_before(at)
        self._commit(segment)
        if self.config.turn_detection.get("create_response"):
            self.responder.start(self.pending)

    async def on_commit(self, event) -> None:
        if self.turn_samples_in:
            self.buffer.append(self.resampler(np.zeros(0, np.float32), last=True))  # the resampler's tail
        audio = self._buffered()
        if not len(audio):
            raise ClientError("input_audio_buffer_commit_empty", "the input audio buffer is empty: append audio "
                              "before committing")
        self._reset_buffer()
        self.buffer_start = self.stream_pos
        self.speech_start = None
        self._commit(audio)

    async def on_clear(self, event) -> None:
        self._reset_buffer()
        self.buffer_start = self.stream_pos
        self.speech_start = None
        self.emit(P.buffer_cleared())

    def _commit(self, samples: np.ndarray) -> None:
        """The buffer becomes a user audio item (committed, created, done)."""
        item_id, self.next_item_id = self.next_item_id, P.new_id("item")
        previous = self.items[-1] if self.items else None
        self.emit(P.buffer_committed(item_id, previous))
        self._add_user_item(item_id, UserInput(item_id, wav=wav_bytes(samples, VAD_RATE),
                                               seconds=len(samples) / VAD_RATE, committed_at=time.perf_counter()),
                            P.user_item(item_id, audio=True))

    def _add_user_item(self, item_id: str, user: UserInput, item: dict) -> None:
        previous = self.items[-1] if self.items else None
        self.items.append(item_id)
        self.pending = user
        self.emit(P.item_created(item, previous))
        self.emit(P.item_done(item, previous))
        if user.wav is not None and self.config.transcription is not None:
            task = asyncio.create_task(self._transcribe(user))
            self.transcriptions.add(task)
            task.add_done_callback(self.transcriptions.discard)

    async def _transcribe(self, user: UserInput) -> None:
        """audio.input.transcription: the checkpoint's own ASR of the user's audio, beside the response
        (decoded in the same batch as the other requests)."""
        try:
            result = await self.engine.arun(HELPER_TASKS["transcribe"], wav=user.wav,
                                            key=f"{self.id}-asr-{user.item_id}", greedy=True)
            self.emit(P.transcription_completed(user.item_id, result.text, user.seconds))
        except ChatInputError as e:
            self.emit(P.transcription_failed(user.item_id, e.reason, str(e)))
        except Exception as e:  # noqa: BLE001 - the turn goes on without its transcript
            log.exception("transcription of %s failed", user.item_id)
            self.emit(P.transcription_failed(user.item_id, "server_error", f"{type(e).__name__}: {e}"))

    # -------------------------------------------------------------- items
    async def on_item_create(self, event) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type", "message") != "message" or item.get("role") != "user":
            raise ClientError("unsupported_item", "only user messages can be created (type message, role user)",
                              "item.role")
        content = item.get("content")
        if not isinstance(content, list) or len(content) != 1 or not isinstance(content[0], dict):
            raise ClientError("invalid_value", "a user message needs exactly one content part (input_text or "
                              "input_audio)", "item.content")
        part = content[0]
        item_id = item.get("id") if isinstance(item.get("id"), str) else P.new_id("item")
        if item_id in self.items:
            raise ClientError("duplicate_item_id", f"item id {item_id} is already in the conversation", "item.id")
        speech_in = self.config.spec.speech_input
        if part.get("type") == "input_text":
            text = part.get("text")
            if not isinstance(text, str) or not text.strip():
                raise ClientError("empty_text", "input_text needs a non-empty text", "item.content[0].text")
            if speech_in:
                raise ClientError("text_on_audio_task", f"task {self.config.task} takes speech, not text: send audio, "
                                  "or choose a text task with session.update {osum: {task: t2t | tts}}",
                                  "item.content[0].type")
            user = UserInput(item_id, text=text, committed_at=time.perf_counter())
            self._add_user_item(item_id, user, P.user_item(item_id, text=text))
        elif part.get("type") == "input_audio":
            if not speech_in:
                raise ClientError("audio_on_text_task", f"task {self.config.task} takes text, not audio: send "
                                  "input_text, or choose a speech task with session.update {osum: {task: ...}}",
                                  "item.content[0].type")
            pcm = decode_pcm16(part.get("audio"))
            if not len(pcm):
                raise ClientError("empty_audio", "input_audio has no samples", "item.content[0].audio")
            if len(pcm) > self.settings.max_turn_audio_s * self.rate_in:
                raise ClientError("input_audio_too_long", f"input_audio lasts more than {self.settings.max_turn_audio_s:g} s",
                                  "item.content[0].audio")
            samples = resample(pcm.astype(np.float32) / 32768.0, self.rate_in, VAD_RATE)
            user = UserInput(item_id, wav=wav_bytes(samples, VAD_RATE), seconds=len(samples) / VAD_RATE,
                             committed_at=time.perf_counter())
            self._add_user_item(item_id, user, P.user_item(item_id, audio=True))
        else:
            raise ClientError("unsupported_content", f"content type {part.get('type')!r}: use input_text or input_audio",
                              "item.content[0].type")

    async def on_item_truncate(self, event) -> None:
        item_id = event.get("item_id")
        audio_end_ms = event.get("audio_end_ms")
        if not isinstance(audio_end_ms, int) or isinstance(audio_end_ms, bool) or audio_end_ms < 0:
            raise ClientError("invalid_value", "audio_end_ms must be an integer >= 0", "audio_end_ms")
        if not self.responder.truncate(item_id, audio_end_ms):
            raise ClientError("item_not_found", f"no assistant audio item {item_id!r} in this conversation", "item_id")
        self.emit(P.item_truncated(item_id, int(event.get("content_index") or 0), audio_end_ms))

    # -------------------------------------------------------------- responses
    async def on_response_create(self, event) -> None:
        if self.responder.active:
            raise ClientError("conversation_already_has_active_response", "a response is in progress: wait for its "
                              "response.done or send response.cancel")
        if self.pending is None:
            raise ClientError("no_user_input", "nothing to answer: commit audio or create a user item first")
        config, out_of_band, metadata = self._response_params(event.get("response"))
        self.responder.start(self.pending, config, out_of_band, metadata)

    def _response_params(self, params) -> tuple:
        """response.create's `response` object: (this response's SessionConfig, out of band, client
        metadata). Its instructions, max_output_tokens, output_modalities, audio.output.voice and
        osum fields apply to this response only, read as session.update reads them."""
        if params is None:
            return None, False, {}
        if not isinstance(params, dict):
            raise ClientError("invalid_value", "response must be an object", "response")
        conversation = params.get("conversation", "auto")
        if conversation not in ("auto", "none"):
            raise ClientError("invalid_value", "conversation must be \"auto\" (add the answer to this conversation) "
                              "or \"none\" (an out-of-band answer, without the conversation's history)",
                              "response.conversation")
        for name, what in (("input", "items as the input of a response (create them as conversation items first)"),
                           ("tools", "tools (this model does not call functions)")):
            if params.get(name):
                raise ClientError("unsupported_field", f"response.{name}: {what} are not served", f"response.{name}")
        metadata = params.get("metadata") or {}
        if not isinstance(metadata, dict) or len(metadata) > 16 or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ClientError("invalid_value", "metadata must be an object of at most 16 string values",
                              "response.metadata")
        fields = {k: params[k] for k in ("instructions", "max_output_tokens", "output_modalities", "audio", OSUM_KEY)
                  if k in params}
        try:
            config = self.config.updated(fields, self.variants, tuple(self.engine.voices))
        except SessionUpdateError as e:
            raise ClientError(e.code, str(e), e.param.replace("session.", "response.", 1)) from None
        return config, conversation == "none", metadata

    async def on_response_cancel(self, event) -> None:
        if not self.responder.active:
            raise ClientError("response_cancel_not_active", "there is no response in progress to cancel")
        await self.responder.cancel("client_cancelled")

    async def close(self) -> None:
        for task in list(self.transcriptions):
            task.cancel()
        await self.responder.shutdown()

    HANDLERS = {
        "session.update": on_session_update,
        "input_audio_buffer.append": on_append,
        "input_audio_buffer.commit": on_commit,
        "input_audio_buffer.clear": on_clear,
        "conversation.item.create": on_item_create,
        "conversation.item.truncate": on_item_truncate,
        "response.create": on_response_create,
        "response.cancel": on_response_cancel,
    }
