"""The web demo: its server logic in process, then the real page driven by headless Chromium."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from osum_echat.infer.runtime import ChatPipeline
from osum_echat.infer.web_demo import DemoServer, format_timings

S2S = "<S2TCHAT> <TEXT2TOKEN>"


@pytest.fixture(scope="module")
def server(tiny_checkpoints):
    config, a, b = tiny_checkpoints
    pipe = ChatPipeline.from_files(config, a, device="cpu", checkpoint_b=b,
                                   decode_options={"overrides": {"max_text_tokens": 5, "max_speech_tokens": 9}})
    return DemoServer(pipe, ["a", "b"])


def test_sessions_do_not_mix_and_reset_clears_one(server, wavs):
    _, r, status = server.turn("tab1", S2S, wavs["q"], "", "", "a")
    assert r.history_turns == 0 and status.startswith("ok (0 history turn(s) used)")
    _, r, _ = server.turn("tab1", S2S, wavs["q2"], "", "", "a")
    assert r.history_turns == 1
    session, r, _ = server.turn("tab2", S2S, wavs["q"], "", "", "b")  # the other tab starts fresh
    assert r.history_turns == 0 and len(session.messages) == 2
    assert server.pipe.variants.current == "b"
    server.reset("tab1")
    _, r, _ = server.turn("tab1", S2S, wavs["q"], "", "", "a")
    assert r.history_turns == 0 and server.pipe.variants.current == "a"
    assert len(server.session("tab2").messages) == 2


def test_bad_input_is_a_status_line_and_the_server_goes_on(server, wavs):
    for args, start in [((S2S, wavs["not_audio"], "", ""), "error: not_audio: "),
                        ((S2S, wavs["long"], "", ""), "error: audio_too_long: "),
                        (("<TEXT2TEXT>", None, "  ", ""), "error: empty_text: "),
                        ((S2S, None, "", ""), "error: missing_input: ")]:
        session, result, status = server.turn("bad", *args, "a")
        assert result is None and status.startswith(start), status
    assert session.messages == []
    _, result, status = server.turn("bad", "<TRANSCRIBER>", wavs["q"], "", "", "a")
    assert result is None and status.startswith("error: unknown_task: ") and "closest: <TRANSCRIBE>" in status
    _, result, status = server.turn("bad", "<S2TCHAT><THINK>", wavs["stereo8k"], "", "", "a")
    assert result.task == "<S2TCHAT> <THINKER>" and "read as <S2TCHAT> <THINKER>" in status
    assert "mixed to mono" in status


def test_timings_line():
    assert format_timings({"encoder": 0.0031, "llm": 0.08, "total": 0.1}) == "encoder 3 ms · LLM 80 ms · total 100 ms"


# ---------------------------------------------------------------------------- the real page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def page_server(tiny_checkpoints, tiny_token2wav, tmp_path, repo_root):
    config, a, b = tiny_checkpoints
    port = _free_port()
    log = open(tmp_path / "demo.log", "w")
    # sampling so that the random model writes visible text; short caps keep a turn well under a second
    proc = subprocess.Popen([sys.executable, "-m", "osum_echat.bin.demo_web", "--config", config, "--checkpoint", a,
                             "--checkpoint_b", b, "--token2wav_dir", tiny_token2wav, "--port", str(port), "--max_text_tokens", "8",
                             "--max_speech_tokens", "30", "--do_sample", "true", "--seed", "3",
                             "--max_file_size", "600kb"],
                            cwd=repo_root, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 240
    while time.time() < deadline:
        assert proc.poll() is None, (tmp_path / "demo.log").read_text()
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            time.sleep(1)
    yield url
    proc.terminate()
    proc.wait(30)
    log.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: the browser test drives the Debian chromium "
                    "package (tools/install.sh installs it when run as root: apt-get install -y chromium)")
def test_two_speech_turns_in_a_real_browser(page_server, wavs, tmp_path):
    from playwright.sync_api import sync_playwright

    def value(page, elem_id):
        return page.locator(f"#{elem_id} textarea").input_value()

    def send_and_wait(page, status_part):
        page.click("#send")
        page.wait_for_function(f"document.querySelector('#status textarea').value.includes({status_part!r})",
                               timeout=120_000)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 1400})
        page.goto(page_server)
        page.locator("#user_audio input[type=file]").set_input_files(wavs["q"])
        page.wait_for_selector("#user_audio audio, #user_audio canvas, #user_audio [data-testid='waveform-x']",
                               state="attached", timeout=30_000)
        send_and_wait(page, "0 history turn(s)")
        first = value(page, "answer")
        assert first.strip()
        send_and_wait(page, "1 history turn(s)")  # the second turn carries the first as history
        assert value(page, "answer").strip()
        for part in ("encoder", "LLM", "token2wav", "first audio"):
            assert part in value(page, "timings")
        # the spoken answer: an audio element the browser decoded (30 codes at 25 Hz: about 1.2 s);
        # gradio's waveform player keeps it in a shadow root, which playwright's locators pierce
        player = page.locator("#answer_audio audio[src]").first
        player.wait_for(state="attached", timeout=30_000)
        deadline = time.time() + 30
        while not player.evaluate("a => a.duration") > 0.5 and time.time() < deadline:
            time.sleep(0.5)
        assert 0.5 < player.evaluate("a => a.duration") < 2
        assert page.locator("#history").inner_text().count(S2S) == 2  # both turns listed
        page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)

        other = browser.new_page()  # a second tab: its own conversation
        other.goto(page_server)
        other.locator("#user_audio input[type=file]").set_input_files(wavs["q2"])
        other.wait_for_selector("#user_audio audio, #user_audio canvas", state="attached", timeout=30_000)
        send_and_wait(other, "0 history turn(s)")

        for bad, error in (("long8k", "error: audio_too_long"), ("not_audio", "error: not_audio")):
            page.locator("#user_audio button[aria-label='Clear']").first.click()
            page.locator("#user_audio input[type=file]").set_input_files(wavs[bad])
            send_and_wait(page, error)
        page.locator("#user_audio button[aria-label='Clear']").first.click()
        page.locator("#user_audio input[type=file]").set_input_files(wavs["long"])  # 1 MB: over the limit
        page.get_by_text("exceed the maximum allowed size").first.wait_for(timeout=30_000)
        page.locator("#user_audio input[type=file]").set_input_files(wavs["q"])
        send_and_wait(page, "2 history turn(s)")  # still serving; failed turns left the history alone
        page.click("#reset")
        page.wait_for_function("document.querySelector('#status textarea').value == 'conversation reset'")
        browser.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000
