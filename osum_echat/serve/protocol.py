"""Every server event of WS /v1/realtime, in one file: the OpenAI Realtime API (GA) shapes, a subset.

Each function returns the JSON dict of one event; every one validates against the pinned SDK's
`openai.types.realtime.RealtimeServerEvent` (tests/serve/test_realtime_*.py check all events sent),
except the extensions below, which that union does not know:

  osum.response.think.delta {response_id, item_id, delta}   the think chain, never in the transcript
  osum.response.think.done  {response_id, item_id, think}

Model-specific session fields go under session["osum"] (see session.py `SessionConfig`).
"""
from __future__ import annotations

import uuid
from typing import Optional

THINK_DELTA = "osum.response.think.delta"
THINK_DONE = "osum.response.think.done"
EXTENSION_EVENTS = (THINK_DELTA, THINK_DONE)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def _event(type_: str, **fields) -> dict:
    return {"type": type_, "event_id": new_id("event"), **fields}


# ------------------------------------------------------------------ session

def session_created(session: dict) -> dict:
    return _event("session.created", session=session)


def session_updated(session: dict) -> dict:
    return _event("session.updated", session=session)


def error(code: str, message: str, event_id: Optional[str] = None, param: Optional[str] = None,
          type_: str = "invalid_request_error") -> dict:
    return _event("error", error={"type": type_, "code": code, "message": message, "param": param,
                                  "event_id": event_id})


# ------------------------------------------------------------------ input audio buffer

def speech_started(audio_start_ms: int, item_id: str) -> dict:
    return _event("input_audio_buffer.speech_started", audio_start_ms=int(audio_start_ms), item_id=item_id)


def speech_stopped(audio_end_ms: int, item_id: str) -> dict:
    return _event("input_audio_buffer.speech_stopped", audio_end_ms=int(audio_end_ms), item_id=item_id)


def buffer_committed(item_id: str, previous_item_id: Optional[str]) -> dict:
    return _event("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous_item_id)


def buffer_cleared() -> dict:
    return _event("input_audio_buffer.cleared")


# ------------------------------------------------------------------ conversation items

def user_item(item_id: str, *, text: Optional[str] = None, audio: bool = False) -> dict:
    """A user message; audio items carry no audio back (like OpenAI's, transcript null)."""
    part = {"type": "input_audio", "transcript": None} if audio else {"type": "input_text", "text": text}
    return {"id": item_id, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
            "content": [part]}


def assistant_item(item_id: str, status: str, *, audio: bool, text: str = "") -> dict:
    part = {"type": "output_audio", "transcript": text} if audio else {"type": "output_text", "text": text}
    return {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant", "status": status,
            "content": [part]}


def item_created(item: dict, previous_item_id: Optional[str]) -> dict:
    return _event("conversation.item.created", item=item, previous_item_id=previous_item_id)


def item_done(item: dict, previous_item_id: Optional[str]) -> dict:
    return _event("conversation.item.done", item=item, previous_item_id=previous_item_id)


def transcription_completed(item_id: str, transcript: str, seconds: float) -> dict:
    return _event("conversation.item.input_audio_transcription.completed", item_id=item_id, content_index=0,
                  transcript=transcript, usage={"type": "duration", "seconds": round(float(seconds), 3)})


def transcription_failed(item_id: str, code: str, message: str) -> dict:
    return _event("conversation.item.input_audio_transcription.failed", item_id=item_id, content_index=0,
                  error={"type": "transcription_error", "code": code, "message": message, "param": None})


def item_truncated(item_id: str, content_index: int, audio_end_ms: int) -> dict:
    return _event("conversation.item.truncated", item_id=item_id, content_index=content_index,
                  audio_end_ms=int(audio_end_ms))


# ------------------------------------------------------------------ responses

def response(response_id: str, status: str, *, modalities: list, output: list = (), usage: Optional[dict] = None,
             metadata: Optional[dict] = None, reason: Optional[str] = None, error_: Optional[dict] = None) -> dict:
    body = {"id": response_id, "object": "realtime.response", "status": status, "output": list(output),
            "output_modalities": modalities, "conversation_id": None, "usage": usage,
            "metadata": {k: str(v)[:512] for k, v in (metadata or {}).items()} or None,
            "status_details": None}
    if status != "in_progress":
        body["status_details"] = {"type": status, "reason": reason, "error": error_}
    return body


def response_created(resp: dict) -> dict:
    return _event("response.created", response=resp)


def response_done(resp: dict) -> dict:
    return _event("response.done", response=resp)


def output_item_added(response_id: str, output_index: int, item: dict) -> dict:
    return _event("response.output_item.added", response_id=response_id, output_index=output_index, item=item)


def output_item_done(response_id: str, output_index: int, item: dict) -> dict:
    return _event("response.output_item.done", response_id=response_id, output_index=output_index, item=item)


def _part_fields(response_id: str, item_id: str) -> dict:
    return dict(response_id=response_id, item_id=item_id, output_index=0, content_index=0)


def content_part_added(response_id: str, item_id: str, audio: bool) -> dict:
    part = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
    return _event("response.content_part.added", part=part, **_part_fields(response_id, item_id))


def content_part_done(response_id: str, item_id: str, audio: bool, text: str) -> dict:
    part = {"type": "audio", "transcript": text} if audio else {"type": "text", "text": text}
    return _event("response.content_part.done", part=part, **_part_fields(response_id, item_id))


def transcript_delta(response_id: str, item_id: str, delta: str) -> dict:
    return _event("response.output_audio_transcript.delta", delta=delta, **_part_fields(response_id, item_id))


def transcript_done(response_id: str, item_id: str, transcript: str) -> dict:
    return _event("response.output_audio_transcript.done", transcript=transcript,
                  **_part_fields(response_id, item_id))


def text_delta(response_id: str, item_id: str, delta: str) -> dict:
    return _event("response.output_text.delta", delta=delta, **_part_fields(response_id, item_id))


def text_done(response_id: str, item_id: str, text: str) -> dict:
    return _event("response.output_text.done", text=text, **_part_fields(response_id, item_id))


def audio_delta(response_id: str, item_id: str, b64_pcm16: str) -> dict:
    return _event("response.output_audio.delta", delta=b64_pcm16, **_part_fields(response_id, item_id))


def audio_done(response_id: str, item_id: str) -> dict:
    return _event("response.output_audio.done", **_part_fields(response_id, item_id))


# ------------------------------------------------------------------ extensions

def think_delta(response_id: str, item_id: str, delta: str) -> dict:
    return _event(THINK_DELTA, response_id=response_id, item_id=item_id, delta=delta)


def think_done(response_id: str, item_id: str, think: str) -> dict:
    return _event(THINK_DONE, response_id=response_id, item_id=item_id, think=think)
