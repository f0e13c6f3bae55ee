"""A plain `websockets` Realtime client for the tests: every server event it receives is validated
against the pinned openai SDK's `RealtimeServerEvent` (the think extension against its own shape)."""
from __future__ import annotations

import base64
import json

import numpy as np
import pydantic
import soundfile as sf
import soxr
from openai.types.realtime import RealtimeServerEvent
from websockets.sync.client import connect

SERVER_EVENT = pydantic.TypeAdapter(RealtimeServerEvent)
# the server's own events (docs/serving.md "Extensions"): the SDK's union does not know them
THINK_EVENTS = {"osum.response.think.delta": {"response_id", "item_id", "delta"},
                "osum.response.think.done": {"response_id", "item_id", "think"}}
SEEN_TYPES: set = set()


def validate(event: dict) -> dict:
    SEEN_TYPES.add(event["type"])
    if event["type"] in THINK_EVENTS:
        assert THINK_EVENTS[event["type"]] <= set(event) and event["event_id"], event
    else:
        SERVER_EVENT.validate_python(event)  # raises on any shape the SDK's types do not allow
    return event


def pcm24k(path: str, pad_before: float = 0.0, pad_after: float = 0.0) -> bytes:
    """A wav file -> PCM16 mono 24 kHz bytes, with silence around it."""
    x, rate = sf.read(path, dtype="float32", always_2d=True)
    x = soxr.resample(x.mean(1), rate, 24000)
    x = np.concatenate([np.zeros(int(pad_before * 24000), np.float32), x, np.zeros(int(pad_after * 24000), np.float32)])
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class RtClient:
    def __init__(self, base_url: str, key: str | None = None, subprotocols=None, model: str = "tiny-echat"):
        url = base_url.replace("http://", "ws://") + f"/v1/realtime?model={model}"
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.ws = connect(url, additional_headers=headers, subprotocols=subprotocols, max_size=None,
                          open_timeout=30)
        self.events: list = []

    def send(self, event: dict) -> None:
        self.ws.send(json.dumps(event))

    def recv(self, timeout: float = 60.0) -> dict:
        event = validate(json.loads(self.ws.recv(timeout=timeout)))
        self.events.append(event)
        return event

    def until(self, type_: str, timeout: float = 120.0) -> list:
        """Events received up to and including the first of `type_`."""
        got = []
        while True:
            got.append(self.recv(timeout))
            if got[-1]["type"] == type_:
                return got

    def append_audio(self, raw: bytes, chunk_ms: int = 100) -> None:
        step = 24000 * 2 * chunk_ms // 1000
        for i in range(0, len(raw), step):
            self.send({"type": "input_audio_buffer.append", "audio": b64(raw[i:i + step])})

    def close(self) -> None:
        self.ws.close()
