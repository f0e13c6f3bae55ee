"""REST through the official openai SDK against a real server subprocess: chat completions (T2T,
streamed and not), transcriptions, speech, auth, bad input, /healthz, /metrics, the page."""
import io
import subprocess
import sys
import urllib.request

import numpy as np
import openai
import pytest
import soundfile as sf

from conftest import API_KEY, serve

GREEDY = dict(max_text_tokens=8, greedy=True)


@pytest.fixture(scope="module")
def server(tiny_checkpoints, tiny_token2wav):
    config, ckpt, _ = tiny_checkpoints
    yield from serve(["--checkpoint", ckpt, "--config", config, "--token2wav_dir", tiny_token2wav,
                      "--api_key", API_KEY, "--model_name", "tiny-echat"])


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def pipe(tiny_checkpoints, tiny_token2wav):
    """The same model in this process: what the server answers must be what the pipeline gives."""
    from osum_echat.infer.runtime import ChatPipeline

    config, ckpt, _ = tiny_checkpoints
    return ChatPipeline.from_files(config, ckpt, tiny_token2wav, device="cpu")


def test_chat_completion_is_the_pipelines_t2t_answer(client, pipe):
    r = client.chat.completions.create(model="tiny-echat", messages=[{"role": "user", "content": "hello there"}],
                                       max_tokens=8, temperature=0)
    assert r.object == "chat.completion" and r.model == "tiny-echat"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == pipe.t2t("hello there", **GREEDY).text
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens == len(pipe.tokenizer.encode(r.choices[0].message.content,
                                                                  add_special_tokens=False))


def test_streamed_chat_completion_adds_up_to_the_whole_answer(client):
    kw = dict(model="tiny-echat", messages=[{"role": "system", "content": "be brief"},
                                            {"role": "user", "content": "what is the weather"}],
              max_tokens=8, temperature=0)
    whole = client.chat.completions.create(**kw).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, **kw))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_transcription_is_the_pipelines_asr(client, pipe, spoken_wav):
    with open(spoken_wav, "rb") as f:
        r = client.audio.transcriptions.create(model="tiny-echat", file=f)
    assert r.text == pipe.transcribe(spoken_wav).text
    with open(spoken_wav, "rb") as f:
        text = client.audio.transcriptions.create(model="tiny-echat", file=f, response_format="text")
    assert text.strip() == r.text.strip()


def test_speech_returns_wav_and_pcm(client):
    wav = client.audio.speech.create(model="tiny-echat", voice="alloy", input="hello", response_format="wav").content
    samples, rate = sf.read(io.BytesIO(wav))
    assert rate == 22050 and samples.ndim == 1 and len(samples) > 0
    pcm = client.audio.speech.create(model="tiny-echat", voice="alloy", input="hello", response_format="pcm").content
    assert len(pcm) % 2 == 0 and len(pcm) > 0  # raw PCM16 at 24 kHz (a sampled answer: its own length)
    assert np.abs(np.frombuffer(pcm, "<i2")).max() > 0


def test_bad_requests_get_openai_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="m", messages=[])
    assert e.value.code == "missing_messages"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "  "}])
    assert e.value.code == "empty_text"
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="m", voice="alloy", input="hi", response_format="mp3")
    assert e.value.code == "unsupported_response_format" and "wav" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model="m", file=("x.wav", b"not audio at all"))
    assert e.value.code == "not_audio"


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "user", "content": 5}]}, {"messages": [{"role": "user", "content": [{"x": 1}]}]},
    {"messages": "hi"}, {"messages": [5, None]}, {"messages": [{"role": "user", "content": "hi"}], "top_p": "x"},
    {"messages": [{"role": "user", "content": "hi"}], "seed": "x"},
    {"messages": [{"role": "user", "content": "hi"}], "max_tokens": True},
    {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "%%"}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": "x"}]}]}, [1], "x"])
def test_malformed_chat_bodies_are_400s(server, body):
    req = urllib.request.Request(server + "/v1/chat/completions", data=__import__("json").dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 400 and b'"code"' in e.value.read()


def test_api_key_required(server):
    c = openai.OpenAI(base_url=server + "/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "invalid_api_key"
    for path in ("/v1/chat/completions", "/metrics"):  # no Authorization header at all
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(server + path, data=b"{}" if "v1" in path else None))
        assert e.value.code == 401 and b"invalid_api_key" in e.value.read()


def test_healthz_metrics_and_page(server, client):
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    with urllib.request.urlopen(server + "/healthz") as r:
        assert b'"audio_output":true' in r.read()
    req = urllib.request.Request(server + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req) as r:
        text = r.read().decode()
    assert 'osum_turns_total{endpoint="chat.completions",status="completed"}' in text
    assert 'osum_errors_total{code="invalid_api_key"}' in text or "osum_errors" in text
    assert "osum_end_of_speech_to_first_audio_seconds_bucket" in text
    with urllib.request.urlopen(server + "/") as r:
        assert r.headers["content-type"].startswith("text/html") and b"<html" in r.read().lower()


def test_non_loopback_host_needs_an_api_key(tiny_checkpoints):
    config, ckpt, _ = tiny_checkpoints
    p = subprocess.run([sys.executable, "-m", "osum_echat.bin.serve", "--checkpoint", ckpt, "--config", config,
                        "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin"})
    assert p.returncode == 2 and "--api_key" in p.stderr and "Traceback" not in p.stderr
