"""A server without --token2wav_dir (text only, audio output off, no API key on loopback) and short
limits: idle timeout, session length, message size."""
import time

import openai
import pytest
from websockets.exceptions import ConnectionClosed

from conftest import serve
from rt_client import RtClient, b64, pcm24k


@pytest.fixture(scope="module")
def server(tiny_checkpoints):
    config, ckpt, _ = tiny_checkpoints
    yield from serve(["--checkpoint", ckpt, "--config", config, "--max_text_tokens", "8", "--idle_timeout_s", "2.5",
                      "--max_session_s", "8", "--max_message_bytes", "200000"])


def connect(server) -> RtClient:
    c = RtClient(server)
    assert c.recv()["type"] == "session.created"
    return c


def closed_code(c: RtClient, timeout: float = 15.0) -> int:
    with pytest.raises(ConnectionClosed) as e:
        while True:
            c.recv(timeout)
    return e.value.rcvd.code


def test_text_only_session_answers_speech_in_text(server, spoken_wav):
    c = connect(server)
    session = c.events[0]["session"]
    assert session["output_modalities"] == ["text"] and session["osum"]["audio_output"] is False
    assert session["osum"]["task"] == "<S2TCHAT>"  # the server's default task speaks: audio is off, so text chat
    c.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
    c.until("session.updated")
    c.append_audio(pcm24k(spoken_wav))
    c.send({"type": "input_audio_buffer.commit"})
    c.send({"type": "response.create"})
    events = c.until("response.done")
    kinds = [e["type"] for e in events]
    assert "response.output_text.done" in kinds and "response.output_audio.delta" not in kinds
    assert events[-1]["response"]["output_modalities"] == ["text"]
    c.close()


def test_audio_output_requests_are_refused_clearly(server):
    c = connect(server)
    c.send({"type": "session.update", "event_id": "evt_s2s", "session": {"osum": {"task": "s2s"}}})
    err = c.until("error")[-1]["error"]
    assert err["code"] == "audio_output_off" and "--token2wav_dir" in err["message"]
    assert err["event_id"] == "evt_s2s"
    c.send({"type": "session.update", "session": {"output_modalities": ["audio"]}})
    assert c.until("error")[-1]["error"]["code"] == "unsupported_modalities"
    c.close()
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)  # no key on this server
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="m", voice="alloy", input="hello")
    assert e.value.code == "audio_output_off"


def test_idle_session_is_closed(server):
    c = connect(server)
    t0 = time.monotonic()
    err = c.until("error", timeout=15)[-1]["error"]
    assert err["code"] == "idle_timeout" and 2.0 < time.monotonic() - t0 < 10
    assert closed_code(c) == 1000


def test_session_length_is_bounded(server):
    c = connect(server)
    t0 = time.monotonic()
    with pytest.raises(ConnectionClosed):
        while time.monotonic() - t0 < 20:  # keep the session busy: never idle
            c.send({"type": "input_audio_buffer.clear"})
            c.until("input_audio_buffer.cleared", timeout=5)
            time.sleep(0.5)
    elapsed = time.monotonic() - t0
    with pytest.raises(ConnectionClosed):
        while True:  # what arrived before the close
            c.recv(1)
    assert any(e["type"] == "error" and e["error"]["code"] == "session_expired" for e in c.events)
    assert 7.0 < elapsed < 15


def test_message_over_the_size_limit_closes_with_1009(server):
    c = connect(server)
    c.send({"type": "input_audio_buffer.append", "audio": b64(b"\x00\x00" * 120000)})  # 320 KB of JSON
    assert closed_code(c) == 1009
    ok = connect(server)  # the server is fine
    ok.close()
