"""The browser client (GET /) in Debian Chromium with a fake microphone that speaks a wav, against a
real server subprocess: the page streams the speech, server VAD ends the turn, the answer's text
shows, its audio is scheduled for playback, the end-of-speech -> first-audio time shows; speaking
again while the answer plays stops the playback (barge-in) and truncates the answer to what was
heard; the Stop button silences the answer; a second page is its own conversation; the API key goes
in the page's field (a wrong one is refused)."""
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from server_proc import start_server, stop_server, server_log

KEY = "browser-test-key"
GAP_S = 2.5  # silence between the two questions: VAD ends turn 1, its answer starts playing, then turn 2
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH: the browser test drives the Debian chromium package "
    "(tools/install.sh installs it when run as root: apt-get install -y chromium)")


@pytest.fixture(scope="module")
def fake_mic_wav(tmp_path_factory):
    """Two espeak-ng questions: 1 s of silence (the page connects first), the first, GAP_S of silence,
    the second, 3 s of silence (Chromium's %noloop plays the file once, then silence)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (tools/install.sh installs it: apt-get install espeak-ng)")
    d = tmp_path_factory.mktemp("fake_mic")
    said = []
    for i, text in enumerate(["hello, how are you today?", "tell me a story"]):
        subprocess.run(["espeak-ng", "-w", str(d / f"{i}.wav"), text], check=True)
        x, rate = sf.read(d / f"{i}.wav", dtype="float32")
        said.append(x)
    pad = lambda s: np.zeros(int(s * rate), "float32")  # noqa: E731
    sf.write(d / "mic.wav", np.concatenate([pad(1.0), said[0], pad(GAP_S), said[1], pad(3.0)]), rate,
             subtype="PCM_16")
    return str(d / "mic.wav"), 1.0 + len(said[0]) / rate


@pytest.fixture(scope="module")
def base_url(tiny_checkpoints, tiny_token2wav):
    config, ckpt, _ = tiny_checkpoints
    # sampled (greedy, the random model writes only newlines); it closes its speech span so rarely that
    # it speaks to the 80-code cap, 3.2 s of audio: the first answer still plays when the second question starts
    url, proc = start_server(["--config", config, "--checkpoint", ckpt, "--token2wav_dir", tiny_token2wav,
                              "--do_sample", "true", "--seed", "3", "--max_text_tokens", "8",
                              "--max_speech_tokens", "80",
                              "--api_key", KEY], timeout=240)
    yield url
    stop_server(proc)
    assert "Traceback" not in server_log(proc), server_log(proc)


@pytest.fixture(scope="module")
def browser(fake_mic_wav):
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={fake_mic_wav[0]}%noloop"]  # autoplay: the click on Start
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield b
        b.close()


def open_page(browser, url, key):
    page = browser.new_page(viewport={"width": 1100, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    page.fill("#api_key", key)
    page.click("#start")
    return page, errors


def test_two_turns_with_barge_in(browser, base_url, fake_mic_wav, tmp_path):
    page, page_errors = open_page(browser, base_url, KEY)
    page.wait_for_function("window.osum.responsesDone >= 2", timeout=120_000)
    s = page.evaluate("window.osum")
    assert page_errors == [] and s["errors"] == [], (page_errors, s["errors"])
    assert s["samplesSent"] > 0.95 * 24000 * fake_mic_wav[1]  # the first question went up at 24 kHz
    for event, n in (("input_audio_buffer.speech_started", 2), ("input_audio_buffer.speech_stopped", 2),
                     ("input_audio_buffer.committed", 2), ("response.created", 2), ("response.done", 2)):
        assert s["events"].get(event, 0) >= n, (event, s["events"])
    answers = page.locator(".turn.assistant .answer").all_inner_texts()
    assert len(answers) == 2 and all(a.strip() for a in answers), answers  # transcript deltas on the page
    assert s["audioDeltas"] > 0 and s["samplesScheduled"] > 0
    assert len(s["latencies"]) >= 1 and 0 < s["lastLatencyMs"] < 60_000
    assert page.locator("#latency").inner_text().endswith(" ms")
    # the second question came while the first answer played: playback stopped, the server was told
    # how much was heard (conversation.item.truncate) and acknowledged it
    assert s["bargeIns"] == 1 and s["events"].get("conversation.item.truncated") == 1, s["events"]
    shot = tmp_path / "realtime_page.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("OSUM_SCREENSHOT_DIR"):
        Path(os.environ["OSUM_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["OSUM_SCREENSHOT_DIR"]) / shot.name)
    assert shot.stat().st_size > 10_000
    page.click("#hangup")
    page.wait_for_function("window.osum.closeCode !== null")


def test_second_page_is_its_own_conversation_and_stop_silences(browser, base_url):
    first, _ = open_page(browser, base_url, KEY)
    first.wait_for_function("window.osum.responsesDone >= 1", timeout=120_000)
    other, errors = open_page(browser, base_url, KEY)  # while the first page's conversation goes on
    other.wait_for_function("window.osum.playing > 0", timeout=120_000)  # its first answer is playing
    other.click("#stop")
    assert other.evaluate("window.osum.playing") == 0  # silenced at once
    for p in (first, other):  # both second questions answered
        p.wait_for_function("window.osum.responsesDone >= 2", timeout=120_000)
    o, f = other.evaluate("window.osum"), first.evaluate("window.osum")
    assert errors == [] and o["errors"] == [] and f["errors"] == [], (o["errors"], f["errors"])
    assert o["sessionId"] and f["sessionId"] and o["sessionId"] != f["sessionId"]
    # one history per WebSocket: each page's second turn saw its own first turn only (shared, the second
    # page's would have seen the first page's turns too)
    assert o["metadata"][1].get("history_turns") == "1", o["metadata"]
    assert f["metadata"][1].get("history_turns") == "1", f["metadata"]
    for p in (first, other):
        p.click("#hangup")


def test_wrong_key_is_refused(browser, base_url):
    refused, _ = open_page(browser, base_url, "wrong-key")  # sent as the WebSocket subprotocol
    refused.wait_for_function("window.osum.closeCode !== null", timeout=30_000)
    r = refused.evaluate("window.osum")
    assert r["sessionId"] is None and r["state"] == "disconnected" and r["closeCode"] != 1000
    assert [e.get("code") for e in r["errors"]] == ["invalid_api_key"]
