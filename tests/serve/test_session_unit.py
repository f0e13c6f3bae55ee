"""The session and the send queue without a server: the think chain goes out in its own event
(never in the transcript), and a client that does not read is closed without slowing another."""
import asyncio
import json
import types

import numpy as np

from osum_echat.serve.app import ServeSettings
from osum_echat.serve.metrics import Metrics
from osum_echat.serve.realtime import Outbox
from osum_echat.serve.session import RealtimeSession
from osum_echat.serve.vad import SileroModel
from rt_client import THINK_EVENTS, b64, validate

THINK, ANSWER = "the user sounds happy", "glad to hear it"


class ScriptedEngine:
    """Answers every request with a fixed think chain and answer, as ChatPipeline.stream's events."""

    audio_on, variants, voices = False, (), {}

    def __init__(self, tokenizer):
        model = types.SimpleNamespace(base_llm=lambda: types.SimpleNamespace(
            config=types.SimpleNamespace(max_position_embeddings=4096)))
        self.pipe = types.SimpleNamespace(model=model, tokenizer=tokenizer, token2wav=None, sample_rate=16000)
        self.requests = []

    async def aevents(self, task, *, cancel, **kw):
        self.requests.append((task, kw))
        for piece in (THINK[:8], THINK[8:]):
            yield {"type": "think_delta", "text": piece}
        for piece in ANSWER.split(" "):
            yield {"type": "text_delta", "text": piece + " "}
        result = types.SimpleNamespace(notes=[], history_turns=0, timings={"llm": 0.01}, input_tokens=12,
                                       text_tokens=3)
        yield {"type": "done", "result": result}


def test_think_chain_has_its_own_event(tiny_tokenizer):
    sent = []

    async def emit_wait(ev):
        sent.append(ev)

    async def scenario():
        engine = ScriptedEngine(tiny_tokenizer)
        s = RealtimeSession(engine, ServeSettings(), sent.append, emit_wait, SileroModel.load(), Metrics(), "m")
        for event in ({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}},
                                                             "osum": {"task": "chat_think"}}},
                      {"type": "input_audio_buffer.append", "audio": b64(np.zeros(4800, "<i2").tobytes())},
                      {"type": "input_audio_buffer.commit"}, {"type": "response.create"}):
            await s.handle(json.dumps(event))
        await s.responder.current.task
        return engine

    engine = asyncio.run(scenario())
    assert engine.requests[0][0] == "<S2TCHAT> <THINKER>" and engine.requests[0][1]["wav"]
    for ev in sent:
        validate(ev)
    think = [e for e in sent if e["type"] in THINK_EVENTS]
    assert "".join(e["delta"] for e in think if e["type"].endswith("delta")) == THINK
    assert think[-1]["type"] == "osum.response.think.done" and think[-1]["think"] == THINK
    text = "".join(e["delta"] for e in sent if e["type"] == "response.output_text.delta")
    assert text.strip() == ANSWER and "happy" not in text
    done = sent[-1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"].strip() == ANSWER


class StuckSocket:
    """A client that never reads: its first send blocks forever."""

    def __init__(self):
        self.sent = []

    async def send_text(self, text):
        await asyncio.Event().wait()


class ReadingSocket(StuckSocket):
    async def send_text(self, text):
        self.sent.append(text)


def test_a_client_that_does_not_read_is_closed_and_others_are_not_slowed(monkeypatch):
    import osum_echat.serve.realtime as realtime

    monkeypatch.setattr(realtime, "SEND_TIMEOUT_S", 0.2)

    async def scenario():
        slow_flag, fast_flag = asyncio.Event(), asyncio.Event()
        stuck, reading = StuckSocket(), ReadingSocket()
        slow_box, fast_box = Outbox(stuck, 4, slow_flag.set), Outbox(reading, 4, fast_flag.set)
        for i in range(50):
            slow_box.emit({"n": i})  # never blocks the producer
            await fast_box.emit_wait({"n": i})
        await slow_box.emit_wait({"n": "audio"})  # waits at most SEND_TIMEOUT_S, then gives up
        await fast_box.flush()
        slow_box.stop(), fast_box.stop()
        return slow_flag.is_set(), fast_flag.is_set(), len(reading.sent)

    slow, fast, delivered = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert slow and not fast and delivered == 50


def malformed_events():
    """Events of served types with fields of every wrong JSON type, nested session fields included."""
    values = [None, 1, -1, 1.5, True, "x", "", [], [1], {}, {"a": 1}, "AAAA", "A"]
    for type_ in ("session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
                  "conversation.item.create", "conversation.item.truncate", "response.create", "response.cancel"):
        for key in ("session", "audio", "item", "item_id", "audio_end_ms", "content_index", "event_id"):
            for v in values:
                yield {"type": type_, key: v}
    for path in (("audio",), ("audio", "input"), ("audio", "output"), ("audio", "input", "format"),
                 ("audio", "input", "format", "rate"), ("audio", "input", "turn_detection"),
                 ("audio", "input", "turn_detection", "threshold"), ("audio", "output", "voice"), ("osum",),
                 ("osum", "task"), ("osum", "decode"), ("osum", "variant"), ("instructions",), ("output_modalities",)):
        for v in values:
            for k in reversed(path):
                v = {k: v}
            yield {"type": "session.update", "session": v}
    for v in values:
        yield {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": v}}
        for part in ({"type": "input_text", "text": v}, {"type": "input_audio", "audio": v}, v):
            yield {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [part]}}
    yield from ([1], "x", 3, None, {"type": 5}, {"event_id": "e"})


def test_no_malformed_event_breaks_the_session(tiny_tokenizer):
    sent = []

    async def emit_wait(ev):
        sent.append(ev)

    async def scenario():
        s = RealtimeSession(ScriptedEngine(tiny_tokenizer), ServeSettings(), sent.append, emit_wait,
                            SileroModel.load(), Metrics(), "m")
        n = 0
        for event in malformed_events():
            await s.handle(json.dumps(event))  # raises nothing
            n += 1
            if s.responder.current is not None:
                await s.responder.current.task
        # still a working session: a commit-mode turn is answered
        for event in ({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}},
                      {"type": "input_audio_buffer.append", "audio": b64(np.zeros(4800, "<i2").tobytes())},
                      {"type": "input_audio_buffer.commit"}, {"type": "response.create"}):
            await s.handle(json.dumps(event))
        await s.responder.current.task
        return n

    n = asyncio.run(scenario())
    errors = [e for e in sent if e["type"] == "error"]
    assert len(errors) > n // 2 and all(e["error"]["message"] for e in errors)
    for ev in sent:
        validate(ev)
    assert sent[-1]["type"] == "response.done" and sent[-1]["response"]["status"] == "completed"
