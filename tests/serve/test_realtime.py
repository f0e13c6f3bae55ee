"""WS /v1/realtime against a real server subprocess: the official openai SDK (audio turn, text turn)
and plain websockets (server VAD from a spoken wav, commit mode, history, barge-in, cancel, bad
input, limits, API key). Every server event received is validated against the SDK's types (rt_client)."""
import json
import shutil
import time
import urllib.request

import numpy as np
import openai
import pytest
import soundfile as sf
import soxr
from websockets.exceptions import ConnectionClosed

from conftest import API_KEY, serve
from rt_client import SEEN_TYPES, RtClient, b64, pcm24k, validate

DECODE = ["--max_text_tokens", "8", "--max_speech_tokens", "40"]
COMMIT_MODE = {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}}}


@pytest.fixture(scope="module")
def server(tiny_checkpoints, tiny_token2wav, spoken_wav2, tmp_path_factory):
    config, ckpt, _ = tiny_checkpoints
    voices = tmp_path_factory.mktemp("voices")
    shutil.copy(spoken_wav2, voices / "narrator.wav")
    yield from serve(["--checkpoint", ckpt, "--config", config, "--token2wav_dir", tiny_token2wav, "--api_key", API_KEY,
                      "--model_name", "tiny-echat", "--max_sessions", "3", "--max_turn_audio_s", "5",
                      "--voices_dir", voices, *DECODE])


@pytest.fixture(scope="module")
def pipe(tiny_checkpoints, tiny_token2wav):
    from osum_echat.infer.runtime import ChatPipeline

    config, ckpt, _ = tiny_checkpoints
    return ChatPipeline.from_files(config, ckpt, tiny_token2wav, device="cpu")


@pytest.fixture
def rt(server):
    clients = []

    def make(**kw):
        c = RtClient(server, kw.pop("key", API_KEY), **kw)
        clients.append(c)
        assert c.recv()["type"] == "session.created"
        return c

    yield make
    for c in clients:
        c.close()


def as_16k(raw: bytes) -> np.ndarray:
    """What the model hears of PCM16 24 kHz bytes (resampled here independently of the server)."""
    return soxr.resample(np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0, 24000, 16000)


def types(events):
    return [e["type"] for e in events]


def ask(c, pcm: bytes, response=None, until: str = "response.done") -> list:
    """Commit mode: append `pcm`, commit, response.create (with a `response` object when given); the
    events up to `until`."""
    c.append_audio(pcm)
    c.send({"type": "input_audio_buffer.commit"})
    c.send({"type": "response.create", **({"response": response} if response is not None else {})})
    return c.until(until)


def audio_bytes(events, response_id=None) -> int:
    import base64
    return sum(len(base64.b64decode(e["delta"])) for e in events
               if e["type"] == "response.output_audio.delta" and response_id in (None, e["response_id"]))


# ------------------------------------------------------------------ the official SDK

def sdk_events_until_done(conn) -> list:
    """Raw events through the SDK's own parser, each also validated strictly."""
    out = []
    while True:
        raw = conn.recv_bytes()
        validate(json.loads(raw))
        out.append(conn.parse_event(raw))
        if out[-1].type == "response.done":
            return out


def test_sdk_audio_turn_is_the_pipelines_greedy_answer(server, pipe, spoken_wav):
    client = openai.OpenAI(base_url=server + "/v1", api_key=API_KEY)
    raw = pcm24k(spoken_wav)
    with client.realtime.connect(model="tiny-echat") as conn:
        conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}},
                                     "osum": {"decode": {"greedy": True}}})
        chunk = 24000 * 2 // 5
        for i in range(0, len(raw), chunk):
            conn.input_audio_buffer.append(audio=b64(raw[i:i + chunk]))
        conn.input_audio_buffer.commit()
        conn.response.create()
        events = sdk_events_until_done(conn)
    kinds = [e.type for e in events]
    assert kinds[0] == "session.created" and "session.updated" in kinds
    assert kinds.index("input_audio_buffer.committed") < kinds.index("response.created")
    done = events[-1].response
    assert done.status in ("completed", "incomplete") and done.output_modalities == ["audio"]
    transcript = "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")
    assert transcript == next(e.transcript for e in events if e.type == "response.output_audio_transcript.done")
    audio = b"".join(__import__("base64").b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
    expected = pipe.run("<S2TCHAT> <TEXT2TOKEN>", wav=(as_16k(raw), 16000), greedy=True, max_text_tokens=8,
                        max_speech_tokens=40)
    assert transcript == expected.text
    assert done.usage.output_token_details.audio_tokens == len(expected.speech_tokens)
    frames = len(as_16k(raw)) / 16000 * 100 / 8  # 10 ms fbank frames, 2x (encoder) x 4x (adapter) fewer
    assert done.usage.input_tokens > frames  # ... plus the system text and the chat template
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    # 24 kHz PCM16 of token2wav's 22,050 Hz answer: the same duration
    assert abs(len(audio) / 2 / 24000 - expected.audio.numel() / expected.sample_rate) < 0.01
    assert float(done.metadata["end_of_speech_to_first_audio_ms"]) > 0


def test_sdk_text_turn(server, pipe):
    client = openai.OpenAI(base_url=server + "/v1", api_key=API_KEY)
    with client.realtime.connect(model="tiny-echat") as conn:
        conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                     "osum": {"task": "t2t", "decode": {"greedy": True}}})
        conn.conversation.item.create(item={"type": "message", "role": "user",
                                            "content": [{"type": "input_text", "text": "hello there"}]})
        conn.response.create()
        events = sdk_events_until_done(conn)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == next(e.text for e in events if e.type == "response.output_text.done")
    assert text == pipe.t2t("hello there", greedy=True, max_text_tokens=8).text
    assert events[-1].response.output_modalities == ["text"]
    assert not any(e.type == "response.output_audio.delta" for e in events)


# ------------------------------------------------------------------ turns

def test_server_vad_turn_from_spoken_wav(rt, spoken_wav):
    c = rt()
    raw = pcm24k(spoken_wav, pad_before=0.6, pad_after=1.0)  # default session: server_vad, OpenAI's defaults
    c.append_audio(raw)
    events = c.until("response.done")
    k = types(events)
    assert k.index("input_audio_buffer.speech_started") < k.index("input_audio_buffer.speech_stopped") \
        < k.index("input_audio_buffer.committed") < k.index("response.created")
    started = events[k.index("input_audio_buffer.speech_started")]
    stopped = events[k.index("input_audio_buffer.speech_stopped")]
    speech_ms = len(pcm24k(spoken_wav)) / 2 / 24
    assert 0 <= started["audio_start_ms"] <= 600  # speech at 600 ms, minus the 300 ms prefix padding
    assert 600 + speech_ms * 0.5 <= stopped["audio_end_ms"] <= 600 + speech_ms + 100
    assert started["item_id"] == stopped["item_id"] == events[k.index("input_audio_buffer.committed")]["item_id"]
    assert events[-1]["response"]["status"] in ("completed", "incomplete") and audio_bytes(events) > 0


def test_commit_mode_two_turns_use_history(rt, spoken_wav):
    c = rt()
    c.send(COMMIT_MODE)
    c.until("session.updated")
    raw = pcm24k(spoken_wav)
    seen, read = [], []
    for turn in range(2):
        events = ask(c, raw)
        assert "input_audio_buffer.speech_started" not in types(events)  # the client commits
        seen.append(events[-1]["response"]["metadata"]["history_turns"])
        read.append(events[-1]["response"]["usage"]["input_tokens"])
        assert audio_bytes(events) > 0
    assert seen == ["0", "1"]
    question = len(raw) / 2 / 24000 * 100 / 8  # its speech positions (see the SDK audio turn)
    assert read[1] - read[0] > question  # the second prompt holds the first question again, and its answer


def test_concurrent_sessions_get_what_they_get_alone(rt, pipe, spoken_wav, spoken_wav2):
    """Two sessions decode at once on the one model (one batch); greedy answers equal ChatPipeline.run."""
    clients, raws = [rt(), rt()], [pcm24k(spoken_wav), pcm24k(spoken_wav2)]
    for c in clients:
        c.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}},
                                                      "osum": {"decode": {"greedy": True}}}})
        c.until("session.updated")
    for c, raw in zip(clients, raws):
        c.append_audio(raw)
    for c in clients:  # both asked before either answer is read
        c.send({"type": "input_audio_buffer.commit"})
        c.send({"type": "response.create"})
    for c, raw in zip(clients, raws):
        events = c.until("response.done")
        alone = pipe.run("<S2TCHAT> <TEXT2TOKEN>", wav=(as_16k(raw), 16000), greedy=True, max_text_tokens=8,
                         max_speech_tokens=40)
        transcript = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
        assert transcript == alone.text
        assert events[-1]["response"]["usage"]["output_token_details"]["audio_tokens"] == len(alone.speech_tokens)


def test_max_output_tokens_caps_the_answer(rt, spoken_wav):
    c = rt()
    c.send({"type": "session.update", "session": {"max_output_tokens": 5, "audio": {"input": {"turn_detection": None}}}})
    assert c.until("session.updated")[-1]["session"]["max_output_tokens"] == 5
    done = ask(c, pcm24k(spoken_wav))[-1]["response"]
    assert done["usage"]["output_token_details"]["audio_tokens"] < 5  # ids of both phases count
    c.send({"type": "session.update", "event_id": "evt_m", "session": {"max_output_tokens": 0}})
    assert c.until("error")[-1]["error"]["param"] == "session.max_output_tokens"


def test_voice_picks_a_speaker_prompt(rt, spoken_wav):
    c = rt()
    assert c.events[0]["session"]["osum"]["voices"] == ["narrator"]
    c.send({"type": "session.update", "event_id": "evt_v", "session": {"audio": {"output": {"voice": "nobody"}}}})
    err = c.until("error")[-1]["error"]
    assert err["code"] == "unknown_voice" and "narrator" in err["message"] and err["event_id"] == "evt_v"
    c.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None},
                                                            "output": {"voice": "narrator"}}}})
    assert c.until("session.updated")[-1]["session"]["audio"]["output"]["voice"] == "narrator"
    events = ask(c, pcm24k(spoken_wav))
    assert events[-1]["response"]["status"] in ("completed", "incomplete") and audio_bytes(events) > 0


def barge_in_setup(rt, spoken_wav):
    c = rt()
    c.send({"type": "session.update", "session": {"type": "realtime",
                                                  "osum": {"decode": {"max_speech_tokens": 600}}}})
    c.until("session.updated")
    return c


def test_barge_in_cancels_the_answer_mid_audio(rt, spoken_wav):
    c = barge_in_setup(rt, spoken_wav)
    c.append_audio(pcm24k(spoken_wav, pad_before=0.3, pad_after=0.8))
    first = c.until("response.created")[-1]["response"]["id"]
    before = c.until("response.output_audio.delta")  # the answer is playing
    c.append_audio(pcm24k(spoken_wav, pad_after=0.8))  # the user speaks again
    events = before + c.until("input_audio_buffer.speech_started")
    events += c.until("response.done")
    done = events[-1]["response"]
    assert done["id"] == first and done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "turn_detected"
    assert done["usage"]["output_token_details"]["audio_tokens"] < 600  # stopped early
    after = c.until("response.done")  # the new turn is answered; nothing of the first follows its done
    assert all(e.get("response_id") != first for e in after)
    assert after[-1]["response"]["id"] != first
    # the history kept the cut answer: the next turn saw one earlier turn
    assert after[-1]["response"]["metadata"]["history_turns"] == "1"


def test_client_gone_mid_answer(rt, server, spoken_wav):
    before = sessions_open(server)
    c = barge_in_setup(rt, spoken_wav)
    c.send(COMMIT_MODE)
    c.until("session.updated")
    c.append_audio(pcm24k(spoken_wav))
    c.send({"type": "input_audio_buffer.commit"})
    c.send({"type": "response.create"})
    c.until("response.output_audio.delta")
    c.ws.close()  # gone while the answer streams: the request stops, the session is freed, no traceback
    deadline = time.monotonic() + 10
    while sessions_open(server) > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sessions_open(server) == before


def test_response_cancel(rt, spoken_wav):
    c = rt()
    c.send(COMMIT_MODE)
    c.send({"type": "session.update", "session": {"osum": {"decode": {"max_speech_tokens": 600}}}})
    c.until("session.updated")
    c.until("session.updated")
    c.append_audio(pcm24k(spoken_wav))
    c.send({"type": "input_audio_buffer.commit"})
    c.send({"type": "response.create"})
    rid = c.until("response.created")[-1]["response"]["id"]
    c.send({"type": "response.cancel", "event_id": "evt_cancel"})
    events = c.until("response.done")
    assert events[-1]["response"]["id"] == rid and events[-1]["response"]["status"] == "cancelled"
    assert events[-1]["response"]["status_details"]["reason"] == "client_cancelled"
    c.send({"type": "response.cancel", "event_id": "evt_again"})
    err = c.until("error")[-1]["error"]
    assert err["code"] == "response_cancel_not_active" and err["event_id"] == "evt_again"
    # the session goes on: the next turn is answered
    assert ask(c, pcm24k(spoken_wav))[-1]["response"]["status"] in ("completed", "incomplete")


def test_truncate_keeps_what_was_played(rt, spoken_wav):
    c = rt()
    c.send(COMMIT_MODE)
    c.until("session.updated")
    events = ask(c, pcm24k(spoken_wav))
    item = events[-1]["response"]["output"][0]["id"]
    c.send({"type": "conversation.item.truncate", "item_id": item, "content_index": 0, "audio_end_ms": 400})
    ev = c.until("conversation.item.truncated")[-1]
    assert ev["item_id"] == item and ev["audio_end_ms"] == 400


# ------------------------------------------------------------------ bad input, limits, keys

BAD = [
    ("not json {", "invalid_json"),
    ({"type": "no.such.event", "event_id": "evt_1"}, "unknown_event_type"),
    ({"type": "input_audio_buffer.append", "audio": "%%%not base64", "event_id": "evt_2"}, "invalid_base64"),
    ({"type": "input_audio_buffer.append", "audio": b64(b"\x00\x01\x02"), "event_id": "evt_3"}, "invalid_audio_length"),
    ({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
      "event_id": "evt_4"}, "unsupported_sample_rate"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "hi"}]}, "event_id": "evt_5"}, "text_on_audio_task"),
    ({"type": "input_audio_buffer.commit", "event_id": "evt_6"}, "input_audio_buffer_commit_empty"),
    ({"type": "response.create", "event_id": "evt_7"}, "no_user_input"),
    ({"type": "response.cancel", "event_id": "evt_8"}, "response_cancel_not_active"),
    ({"type": "conversation.item.truncate", "item_id": "item_x", "content_index": 0, "audio_end_ms": 10,
      "event_id": "evt_9"}, "item_not_found"),
    ({"type": "session.update", "session": {"osum": {"task": "no-such-task"}}, "event_id": "evt_10"}, "unknown_task"),
    ({"type": "session.update", "session": {"osum": {"decode": {"max_txt": 3}}}, "event_id": "evt_11"},
     "unknown_decode_field"),
]


def test_response_create_fields_apply_to_that_response_only(rt, spoken_wav):
    c = rt()
    c.send(COMMIT_MODE)
    c.until("session.updated")
    raw = pcm24k(spoken_wav)

    def answer(response=None):
        return ask(c, raw, response)[-1]["response"]

    first = answer()
    assert first["metadata"]["history_turns"] == "0"
    aside = answer({"conversation": "none", "max_output_tokens": 3, "metadata": {"ticket": "t-7"}})
    assert aside["metadata"]["ticket"] == "t-7" and aside["metadata"]["history_turns"] == "0"  # no history in
    assert aside["usage"]["output_tokens"] <= 3 and aside["status"] == "incomplete"
    assert aside["usage"]["input_tokens"] < first["usage"]["input_tokens"] + 5
    again = answer()
    assert again["metadata"]["history_turns"] == "1"  # the out-of-band answer was not added
    assert again["usage"]["output_tokens"] > 3 and "ticket" not in again["metadata"]  # the cap was that response's
    bad = [({"conversation": "maybe"}, "invalid_value", "response.conversation"),
           ({"tools": [{"type": "function", "name": "f"}]}, "unsupported_field", "response.tools"),
           ({"output_modalities": ["text"]}, "unsupported_modalities", "response.output_modalities"),
           ({"max_output_tokens": -1}, "invalid_value", "response.max_output_tokens"),
           ({"metadata": {"n": 5}}, "invalid_value", "response.metadata"), (7, "invalid_value", "response")]
    for response, code, param in bad:
        c.append_audio(raw)
        c.send({"type": "input_audio_buffer.commit"})
        c.send({"type": "response.create", "event_id": "evt_r", "response": response})
        err = c.until("error")[-1]["error"]
        assert (err["code"], err["param"], err["event_id"]) == (code, param, "evt_r"), response
    assert answer()["status"] in ("completed", "incomplete")  # the buffered question is still answered


def test_other_wire_rates_as_the_declared_extension(rt, spoken_wav):
    c = rt()
    c.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}},
                                                  "osum": {"input_rate": 16000, "output_rate": 8000}}})
    session = c.until("session.updated")[-1]["session"]  # validated against the SDK's types: format stays 24 kHz
    assert (session["osum"]["input_rate"], session["osum"]["output_rate"]) == (16000, 8000)
    assert session["audio"]["input"]["format"]["rate"] == 24000
    x, rate = sf.read(spoken_wav, dtype="float32")
    pcm16k = (np.clip(soxr.resample(x, rate, 16000), -1, 1) * 32767).astype("<i2").tobytes()
    events = ask(c, pcm16k)
    done = events[-1]["response"]
    codes = done["usage"]["output_token_details"]["audio_tokens"]
    assert codes > 0 and abs(audio_bytes(events) / 2 / 8000 - codes / 25) < 0.05  # 25 codes a second, at 8 kHz
    c24 = rt()  # the same question at the standard 24 kHz: the model reads as many positions
    c24.send(COMMIT_MODE)
    c24.until("session.updated")
    at_24k = ask(c24, pcm24k(spoken_wav))[-1]["response"]["usage"]["input_tokens"]
    assert abs(at_24k - done["usage"]["input_tokens"]) <= 1
    c.send({"type": "session.update", "event_id": "evt_rate", "session": {"osum": {"input_rate": 11025}}})
    err = c.until("error")[-1]["error"]
    assert (err["code"], err["param"]) == ("unsupported_sample_rate", "session.osum.input_rate")


def test_input_audio_transcription_is_the_checkpoints_own_asr(rt, pipe, spoken_wav):
    c = rt()
    c.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "turn_detection": None, "transcription": {"model": "whisper-1", "language": "en"}}}}})
    session = c.until("session.updated")[-1]["session"]
    assert session["audio"]["input"]["transcription"] == {"model": "whisper-1", "language": "en"}
    raw = pcm24k(spoken_wav)
    events = ask(c, raw)
    kinds = types(events)
    if "conversation.item.input_audio_transcription.completed" not in kinds:  # it runs beside the response
        events += c.until("conversation.item.input_audio_transcription.completed")
    item = next(e for e in events if e["type"] == "input_audio_buffer.committed")["item_id"]
    done = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    expected = pipe.run("<TRANSCRIBE>", wav=(as_16k(raw), 16000), greedy=True, max_text_tokens=8)  # the server's cap
    assert (done["item_id"], done["transcript"]) == (item, expected.text)
    assert abs(done["usage"]["seconds"] - len(raw) / 2 / 24000) < 0.01
    c.send({"type": "session.update", "session": {"audio": {"input": {"transcription": None}}}})
    assert c.until("session.updated")[-1]["session"]["audio"]["input"]["transcription"] is None
    assert "conversation.item.input_audio_transcription.completed" not in types(ask(c, raw))
    c.send({"type": "session.update", "event_id": "evt_t", "session": {"audio": {"input": {"transcription": 3}}}})
    assert c.until("error")[-1]["error"]["param"] == "session.audio.input.transcription"


def test_every_bad_input_gets_an_error_and_the_session_goes_on(rt, spoken_wav):
    c = rt()
    c.send(COMMIT_MODE)
    c.until("session.updated")
    for message, code in BAD:
        c.ws.send(message if isinstance(message, str) else json.dumps(message))
        err = c.until("error")[-1]["error"]
        assert err["code"] == code, (message, err)
        assert err["event_id"] == (None if isinstance(message, str) else message["event_id"])
        assert err["message"]
    assert ask(c, pcm24k(spoken_wav))[-1]["response"]["status"] in ("completed", "incomplete")


def test_input_audio_over_the_turn_limit_is_cleared(rt, spoken_wav):
    c = rt()
    c.send(COMMIT_MODE)
    c.until("session.updated")
    c.append_audio(b"\x00\x00" * 2400 * 51)  # 5.1 s of silence: the server's limit is 5 s a turn
    events = c.until("error")
    assert events[-1]["error"]["code"] == "input_audio_too_long"
    assert "input_audio_buffer.cleared" in types(events)
    c.send({"type": "input_audio_buffer.commit", "event_id": "evt_c"})  # the buffer is empty now
    assert c.until("error")[-1]["error"]["code"] == "input_audio_buffer_commit_empty"


def sessions_open(server) -> int:
    with urllib.request.urlopen(server + "/healthz") as r:
        return json.load(r)["sessions"]


def test_session_limit(rt, server):
    deadline = time.monotonic() + 10
    while sessions_open(server) and time.monotonic() < deadline:  # earlier tests' sessions closing
        time.sleep(0.1)
    held = [rt() for _ in range(3)]
    extra = RtClient(server, API_KEY)
    err = extra.recv()
    assert err["type"] == "error" and err["error"]["code"] == "session_limit_reached"
    with pytest.raises(ConnectionClosed) as e:
        extra.recv(timeout=10)
    assert e.value.rcvd.code == 1013
    held[0].close()
    deadline = time.monotonic() + 10
    while sessions_open(server) > 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rt()  # room again


@pytest.mark.parametrize("key,subprotocols,ok", [
    (None, None, False), ("wrong", None, False), (API_KEY, None, True),
    (None, ["realtime", f"openai-insecure-api-key.{API_KEY}"], True),
    (None, ["realtime", "openai-insecure-api-key.wrong"], False)])
def test_api_key(server, key, subprotocols, ok):
    c = RtClient(server, key, subprotocols=subprotocols)
    try:
        first = c.recv()
        if ok:
            assert first["type"] == "session.created"
            if subprotocols:
                assert c.ws.subprotocol == "realtime"  # the key is never echoed back
        else:
            assert first["type"] == "error" and first["error"]["code"] == "invalid_api_key"
            with pytest.raises(ConnectionClosed) as e:
                c.recv(timeout=10)
            assert e.value.rcvd.code == 1008
    finally:
        c.close()


def test_metrics_count_sessions_turns_and_first_audio(server):
    req = urllib.request.Request(server + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req) as r:
        text = r.read().decode()
    count = [line for line in text.splitlines() if line.startswith("osum_end_of_speech_to_first_audio_seconds_count")]
    assert count and float(count[0].split()[-1]) >= 1
    assert 'osum_turns_total{endpoint="realtime",status="cancelled"}' in text
    assert 'osum_errors_total{code="session_limit_reached"}' in text
    assert "osum_realtime_sessions_opened_total" in text
    decoder = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
               if line.startswith("osum_decode_")}
    assert decoder["osum_decode_tokens"] >= 1 and decoder["osum_decode_busy_seconds"] > 0  # turns above decoded


def test_every_event_kind_was_seen_and_validated():
    """The scenarios above covered the server's event kinds (each validated on receipt)."""
    expected = {"session.created", "session.updated", "error", "input_audio_buffer.speech_started",
                "input_audio_buffer.speech_stopped", "input_audio_buffer.committed", "input_audio_buffer.cleared",
                "conversation.item.created", "conversation.item.done", "conversation.item.truncated",
                "response.created", "response.output_item.added", "response.content_part.added",
                "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
                "response.output_audio.delta", "response.output_audio.done", "response.output_text.delta",
                "response.output_text.done", "response.content_part.done", "response.output_item.done",
                "response.done"}
    assert expected <= SEEN_TYPES, expected - SEEN_TYPES
