"""token2wav in its own process: packets of a streamed utterance, a crashed worker, a bad model dir."""
import os
import queue
import signal
import threading
import time

import numpy as np
import pytest
import torch

from osum_echat.bin import token2wav as cli
from osum_echat.token2wav import Token2Wav
from osum_echat.token2wav.worker import VoiceWorker


@pytest.fixture(scope="module")
def t2w_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_t2w_worker")
    assert cli.main(["make-tiny", str(out)]) == 0
    return out


def ids(n, seed):
    return torch.randint(0, 4096, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def speak(worker, codes, timeout=60.0):
    """Push `codes`, finish; (audio packets, voice_end error) from the stream's event queue."""
    events, cancel = queue.Queue(), threading.Event()
    voice = worker.open(None, events, cancel)
    for c in codes:
        voice.push(c)
    voice.finish()
    packets = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kind, value = events.get(timeout=timeout)
        if kind == "audio":
            packets.append(value)
        else:
            assert kind == "voice_end" and not voice.running
            return packets, value
    raise AssertionError("no voice_end")


def test_streamed_packets_come_back_with_the_whole_utterance_length(t2w_dir):
    worker = VoiceWorker(t2w_dir, threads=1)
    try:
        local = Token2Wav.from_dir(t2w_dir)
        assert worker.sample_rate == local.sample_rate and worker.alive
        codes = ids(40, 1)
        packets, error = speak(worker, codes)
        assert error is None and len(packets) >= 2  # the first window (10 codes) came on its own
        audio = np.concatenate(packets)
        assert audio.dtype == np.float32 and np.isfinite(audio).all() and np.abs(audio).max() > 0
        assert len(audio) == local.num_samples(len(codes))
        # two utterances at once: each gets its own packets and its own end
        results = [None, None]

        def run(i):
            results[i] = speak(worker, ids(25 + 10 * i, 2 + i))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for i, (packets, error) in enumerate(results):
            assert error is None and len(np.concatenate(packets)) == local.num_samples(25 + 10 * i)
    finally:
        worker.close()
    assert not worker.alive


def test_a_killed_worker_ends_the_utterance_in_flight_and_the_next_one_restarts_it(t2w_dir):
    worker = VoiceWorker(t2w_dir, threads=1)
    try:
        events, cancel = queue.Queue(), threading.Event()
        voice = worker.open(None, events, cancel)
        for c in ids(12, 3):  # the first window renders; the utterance stays open
            voice.push(c)
        assert events.get(timeout=60)[0] == "audio"
        old_pid = worker.pid
        os.kill(old_pid, signal.SIGKILL)
        kind, error = events.get(timeout=30)
        while kind == "audio":
            kind, error = events.get(timeout=30)
        assert kind == "voice_end" and "token2wav worker exited" in error
        voice.push(5)  # after its end: ignored, no second voice_end
        assert events.empty()
        packets, error = speak(worker, ids(20, 4))  # started again by this open
        assert error is None and packets and worker.pid != old_pid and worker.restarts == 1
    finally:
        worker.close()


def test_a_model_dir_the_worker_cannot_load_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path / "missing")):
        VoiceWorker(tmp_path / "missing", threads=1)
