"""Where the server's token2wav runs: its own process by default (gone with the server, even a killed
one), or the server's threads with --token2wav_worker thread; both speak."""
import io
import os
import re
import signal
import time

import openai
import soundfile as sf

from conftest import API_KEY
from server_proc import server_log, start_server, stop_server


def speak(base_url):
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=API_KEY)
    wav = client.audio.speech.create(model="m", voice="alloy", input="hello", response_format="wav").content
    samples, rate = sf.read(io.BytesIO(wav))
    assert rate == 22050 and len(samples) > 0


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waits for its parent: it is gone as a process
        return f.read().split(")")[-1].split()[0] != "Z"


def test_token2wav_process_speaks_and_does_not_outlive_a_killed_server(tiny_checkpoints, tiny_token2wav):
    config, ckpt, _ = tiny_checkpoints
    base_url, proc = start_server(["--checkpoint", ckpt, "--config", config, "--token2wav_dir", tiny_token2wav,
                                   "--api_key", API_KEY, "--max_speech_tokens", "30"])
    try:
        speak(base_url)
        m = re.search(r"token2wav in its own process \(pid (\d+), 1 thread\(s\), onnx estimator\)", server_log(proc))
        assert m, server_log(proc)
        worker = int(m.group(1))
        assert alive(worker)
        proc.send_signal(signal.SIGKILL)  # no shutdown hook runs: the worker sees its pipe close
        proc.wait(10)
        deadline = time.monotonic() + 20
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(worker)
    finally:
        stop_server(proc)


def test_token2wav_in_threads_of_the_server(tiny_checkpoints, tiny_token2wav):
    config, ckpt, _ = tiny_checkpoints
    base_url, proc = start_server(["--checkpoint", ckpt, "--config", config, "--token2wav_dir", tiny_token2wav,
                                   "--api_key", API_KEY, "--max_speech_tokens", "30", "--token2wav_worker", "thread"])
    try:
        speak(base_url)
        assert "own process" not in server_log(proc)
        assert "token2wav in the server process (onnx estimator)" in server_log(proc)
    finally:
        stop_server(proc)
    assert "Traceback" not in server_log(proc)
