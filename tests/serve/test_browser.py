"""The browser client (GET /) in Debian Chromium with a fake microphone that speaks a wav, against a
real server subprocess: the page streams the speech, server VAD ends the turn, the answer's text
shows, its audio is scheduled for playback, the end-of-speech -> first-audio time shows; a second
page is its own conversation; the API key goes in the page's field (a wrong one is refused)."""
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from server_proc import start_server, stop_server, server_log

KEY = "browser-test-key"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH: the browser test drives the Debian chromium package "
    "(tools/install.sh installs it when run as root: apt-get install -y chromium)")


@pytest.fixture(scope="module")
def fake_mic_wav(tmp_path_factory):
    """One espeak-ng sentence (no pause long enough to split the turn), silence before it and 3 s after
    it (VAD ends the turn; Chromium's %noloop plays the file once, then silence)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (tools/install.sh installs it: apt-get install espeak-ng)")
    d = tmp_path_factory.mktemp("fake_mic")
    subprocess.run(["espeak-ng", "-w", str(d / "raw.wav"), "hello, how are you today?"], check=True)
    x, rate = sf.read(d / "raw.wav", dtype="float32")
    pad = lambda s: np.zeros(int(s * rate), "float32")  # noqa: E731
    sf.write(d / "mic.wav", np.concatenate([pad(1.0), x, pad(3.0)]), rate, subtype="PCM_16")
    return str(d / "mic.wav")


@pytest.fixture(scope="module")
def base_url(tiny_checkpoints, tiny_token2wav):
    config, ckpt, _ = tiny_checkpoints
    # sampling with a seed so that the random model says something; short caps keep a turn quick
    url, proc = start_server(["--config", config, "--checkpoint", ckpt, "--token2wav_dir", tiny_token2wav,
                              "--max_text_tokens", "8", "--max_speech_tokens", "40", "--do_sample", "true",
                              "--seed", "3", "--api_key", KEY], timeout=240)
    yield url
    stop_server(proc)
    assert "Traceback" not in server_log(proc), server_log(proc)


def open_page(browser, url, key):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.fill("#api_key", key)
    page.click("#start")
    return page, errors


def talk(browser, url):
    """A new page that connects, starts its microphone (the fake one) and answers one spoken turn."""
    page, errors = open_page(browser, url, KEY)
    page.wait_for_function("window.osum.responsesDone >= 1", timeout=120_000)
    page.wait_for_function("window.osum.lastLatencyMs !== null", timeout=10_000)
    assert errors == []
    return page


def test_page_hears_the_mic_answers_and_plays(base_url, fake_mic_wav, tmp_path):
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={fake_mic_wav}%noloop"]  # autoplay: the click on Start
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        page = talk(browser, base_url + "/")
        s = page.evaluate("window.osum")
        assert s["errors"] == [], s["errors"]
        spoken_s = sf.info(fake_mic_wav).duration - 3.0  # the silence before the speech and the speech
        assert s["samplesSent"] > 0.95 * 24000 * spoken_s  # went up at 24 kHz before the turn ended
        for event in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                      "input_audio_buffer.committed", "response.created", "response.done"):
            assert s["events"].get(event, 0) >= 1, (event, s["events"])
        assert s["lastAnswer"].strip(), s  # the transcript deltas arrived and are on the page
        assert page.locator(".turn.assistant .answer").last.inner_text().strip() == s["lastAnswer"].strip()
        assert s["audioDeltas"] > 0 and s["samplesScheduled"] > 0
        assert 0 < s["lastLatencyMs"] < 60_000
        assert page.locator("#latency").inner_text().endswith(" ms")
        shot = tmp_path / "realtime_page.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("OSUM_SCREENSHOT_DIR"):
            Path(os.environ["OSUM_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(os.environ["OSUM_SCREENSHOT_DIR"]) / shot.name)

        other = talk(browser, base_url + "/")  # a second page: a session of its own
        o = other.evaluate("window.osum")
        assert o["sessionId"] and o["sessionId"] != s["sessionId"]
        assert other.locator(".turn.assistant").count() == o["responsesDone"]
        assert page.evaluate("window.osum.responsesDone") == s["responsesDone"]  # the first page heard nothing new

        refused, _ = open_page(browser, base_url + "/", "wrong-key")  # sent as the WebSocket subprotocol
        refused.wait_for_function("window.osum.closeCode !== null", timeout=30_000)
        r = refused.evaluate("window.osum")
        assert r["sessionId"] is None and r["state"] == "disconnected" and r["closeCode"] != 1000
        assert [e.get("code") for e in r["errors"]] == ["invalid_api_key"]
        browser.close()
    assert shot.stat().st_size > 10_000
