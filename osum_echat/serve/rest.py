"""OpenAI-compatible REST bodies: chat completions (T2T; S2T when the message carries input_audio),
audio transcriptions (the model's ASR) and audio speech (TTS -> wav/pcm/flac).

Each function reads a request body, runs the engine and returns the JSON (or bytes) the OpenAI SDK
parses. Bad input raises `ApiError`, sent as OpenAI's error body {"error": {message, type, param, code}}.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import threading
import time
import uuid
from typing import Optional

import numpy as np
import soundfile

from osum_echat.infer.runtime import HELPER_TASKS, ChatInputError
from osum_echat.serve.audio import to_pcm16_24k, OUTPUT_RATE


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, param: Optional[str] = None,
                 type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.code, self.message, self.param, self.type = status, code, message, param, type_

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def input_error(e: ChatInputError, param: Optional[str] = None) -> ApiError:
    return ApiError(400, e.reason, str(e), param)


# ------------------------------------------------------------------ decode controls

def decode_overrides(body: dict) -> dict:
    """OpenAI sampling fields -> DecodeConfig overrides (temperature 0 -> greedy)."""
    out = {}
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ApiError(400, "invalid_value", "max_tokens must be a positive integer", "max_tokens")
        out["max_text_tokens"] = limit
    temperature = body.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature < 0:
            raise ApiError(400, "invalid_value", "temperature must be a number >= 0", "temperature")
        if temperature == 0:
            out["greedy"] = True
        else:
            out.update(do_sample=True, temperature=float(temperature))
    top_p, seed = body.get("top_p"), body.get("seed")
    if top_p is not None:
        if not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not 0 < top_p <= 1:
            raise ApiError(400, "invalid_value", "top_p must be a number in (0, 1]", "top_p")
        out["top_p"] = float(top_p)
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ApiError(400, "invalid_value", "seed must be an integer", "seed")
        out["seed"] = seed
    return out


# ------------------------------------------------------------------ chat completions

def _message_parts(message: dict, index: int):
    """(text, audio bytes or None) of one chat message (string content or a list of parts)."""
    content = message.get("content")
    if isinstance(content, str):
        return content, None
    if not isinstance(content, list):
        raise ApiError(400, "invalid_value", "message content must be a string or a list of parts",
                       f"messages[{index}].content")
    texts, audio = [], None
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "input_audio":
            data = part.get("input_audio")
            data = data.get("data") if isinstance(data, dict) else None
            try:
                if not isinstance(data, str):
                    raise ValueError
                audio = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, "invalid_base64", "input_audio.data is not valid base64",
                               f"messages[{index}].content[{j}].input_audio.data") from None
        else:
            raise ApiError(400, "unsupported_content", f"content part type {kind!r} is not supported "
                           "(text, input_audio)", f"messages[{index}].content[{j}].type")
    return "\n".join(texts), audio


def chat_request(body: dict):
    """(task, run kwargs, notes) of a chat completion: the last user message is the question; the
    tasks were not trained with text history, so earlier messages are not shown to the model."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "missing_messages", "messages must be a non-empty list", "messages")
    users = [(i, m) for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ApiError(400, "missing_user_message", "messages hold no user message", "messages")
    index, last = users[-1]
    text, audio = _message_parts(last, index)
    notes = []
    if len(messages) > 1:
        notes.append("only the last user message was used (the text task has no history)")
    if audio is not None:
        return HELPER_TASKS["chat"], dict(wav=audio), notes
    return HELPER_TASKS["t2t"], dict(text=text), notes


def _completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False)) if text else 0


def chat_completion(engine, body: dict, model: str) -> dict:
    task, kw, _ = chat_request(body)
    try:
        result = engine.run(task, **kw, **decode_overrides(body))
    except ChatInputError as e:
        raise input_error(e, "messages") from None
    tok = engine.pipe.tokenizer
    prompt_tokens = result.input_tokens or count_tokens(tok, kw.get("text", ""))  # the positions the LLM read
    completion_tokens = count_tokens(tok, result.text)
    finish = "length" if any("stopped at" in n for n in result.notes) else "stop"
    return {"id": _completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                         "message": {"role": "assistant", "content": result.text, "refusal": None}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


async def chat_completion_chunks(engine, body: dict, model: str):
    """Server-sent events of a streamed chat completion (chunks, then `data: [DONE]`)."""
    task, kw, _ = chat_request(body)
    overrides = decode_overrides(body)
    cid, created = _completion_id(), int(time.time())

    def chunk(delta: dict, finish=None) -> str:
        payload = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    cancel = threading.Event()
    yield chunk({"role": "assistant", "content": ""})
    finish = "stop"
    try:
        async for ev in engine.aevents(task, cancel=cancel, **kw, **overrides):
            if ev["type"] == "text_delta" and ev["text"]:
                yield chunk({"content": ev["text"]})
            elif ev["type"] == "done" and any("stopped at" in n for n in ev["result"].notes):
                finish = "length"
    except ChatInputError as e:
        yield f"data: {json.dumps(input_error(e, 'messages').body())}\n\n"
        return
    yield chunk({}, finish)
    yield "data: [DONE]\n\n"


# ------------------------------------------------------------------ audio

def transcription(engine, audio: bytes, response_format: str):
    if response_format not in ("json", "text"):
        raise ApiError(400, "unsupported_response_format",
                       f"response_format {response_format!r} is not supported: use json or text", "response_format")
    try:
        result = engine.run(HELPER_TASKS["transcribe"], wav=audio)
    except ChatInputError as e:
        raise input_error(e, "file") from None
    return result.text if response_format == "text" else {"text": result.text}


SPEECH_FORMATS = {"wav": "audio/wav", "flac": "audio/flac", "pcm": "audio/pcm"}


def speech(engine, body: dict) -> tuple[bytes, str]:
    """(audio bytes, media type): wav/flac at token2wav's rate, pcm as OpenAI's raw 24 kHz PCM16."""
    if not engine.audio_on:
        raise ApiError(400, "audio_output_off", "this server runs without --token2wav_dir: audio output is off "
                       "(restart it with --token2wav_dir DIR to speak)", "model")
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "empty_text", "input must be a non-empty string", "input")
    fmt = body.get("response_format") or "wav"
    if fmt not in SPEECH_FORMATS:
        raise ApiError(400, "unsupported_response_format", f"response_format {fmt!r} is not supported: use "
                       f"{', '.join(SPEECH_FORMATS)}", "response_format")
    try:
        result = engine.run(HELPER_TASKS["tts"], text=text)
    except ChatInputError as e:
        raise input_error(e, "input") from None
    samples = result.audio.numpy() if result.audio is not None else np.zeros(0, np.float32)
    if fmt == "pcm":
        return to_pcm16_24k(samples, result.sample_rate or OUTPUT_RATE), SPEECH_FORMATS[fmt]
    buf = io.BytesIO()
    soundfile.write(buf, samples, result.sample_rate, format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue(), SPEECH_FORMATS[fmt]
