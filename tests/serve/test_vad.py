"""Silero VAD from the silero-vad wheel's own ONNX file: no network, speech found in a spoken wav."""
import socket

import numpy as np
import soundfile as sf
import soxr

from osum_echat.serve.vad import RATE, SileroModel, StreamingVad, packaged_model_path


def test_model_file_ships_in_the_wheel_and_loads_without_network(monkeypatch):
    import silero_vad

    path = packaged_model_path()
    assert path.is_file() and path.is_relative_to(__import__("pathlib").Path(silero_vad.__file__).parent)

    def no_network(*args, **kwargs):
        raise AssertionError("the VAD tried to open a network connection")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    SileroModel.load()


def run_vad(samples, chunk=480, **kw):
    vad = StreamingVad(SileroModel.load(), **kw)
    events = []
    for i in range(0, len(samples), chunk):
        events += vad.push(samples[i:i + chunk])
    return events


def test_speech_start_and_stop_in_a_spoken_wav(spoken_wav):
    x, rate = sf.read(spoken_wav, dtype="float32")
    speech = soxr.resample(x, rate, RATE)
    lead = RATE  # 1 s of silence, the speech, 1 s of silence
    samples = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(RATE, np.float32)])
    events = run_vad(samples)
    assert [k for k, _ in events] == ["start", "stop"]
    start, stop = events[0][1], events[1][1]
    assert lead - 0.1 * RATE <= start <= lead + 0.3 * RATE
    assert lead + 0.5 * len(speech) <= stop <= lead + len(speech)
    # a longer silence_duration_ms waits longer before it says the speech stopped
    assert run_vad(samples, silence_duration_ms=900)[1][1] >= stop


def test_silence_and_hum_are_not_speech():
    t = np.arange(2 * RATE) / RATE
    assert run_vad(np.zeros(2 * RATE, np.float32)) == []
    assert run_vad((0.01 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)) == []
