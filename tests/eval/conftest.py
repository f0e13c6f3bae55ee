"""Fixtures of the evaluation tests: two tiny checkpoints, a tiny token2wav, a judge endpoint process."""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def eval_checkpoints(tiny_checkpoints):
    """(config path, a.pt, b.pt): b differs from a in the adapter projection only (tests/conftest.py)."""
    return tiny_checkpoints


@pytest.fixture(scope="session")
def eval_token2wav(tiny_token2wav):
    return tiny_token2wav


class FakeJudge:
    """tests/eval/fake_judge.py as a subprocess on a free loopback port."""

    def __init__(self, tmp: Path, mode: str, arg: str = ""):
        self.count_file = tmp / f"judge_{mode}_{time.monotonic_ns()}.requests"
        port_file = tmp / f"{self.count_file.name}.port"
        self.proc = subprocess.Popen([sys.executable, str(HERE / "fake_judge.py"), str(port_file),
                                      str(self.count_file), mode] + ([arg] if arg else []))
        deadline = time.time() + 20
        while not port_file.exists():
            if time.time() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("the fake judge did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port_file.read_text()}/v1"

    def requests(self) -> list:
        if not self.count_file.exists():
            return []
        return [json.loads(x) for x in self.count_file.read_text().splitlines() if x]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def fake_judge(tmp_path):
    started = []

    def start(mode: str, arg: str = "") -> FakeJudge:
        started.append(FakeJudge(tmp_path, mode, arg))
        return started[-1]
    yield start
    for j in started:
        j.stop()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dead_url():
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}/v1"


def tone(path, seconds, hz, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.2 * np.sin(2 * np.pi * hz * t)).astype("float32"), rate, subtype="PCM_16")
    return str(path)


ITEMS = [("sad_man", "<SAD>", "<MALE>", "emotion", "<S2TCHAT> <TEXT2TOKEN> <THINK>"),
         ("happy_woman", "<HAPPY>", "<FEMALE>", "emotion", "<S2TCHAT> <TEXT2TOKEN> <THINK>"),
         ("sad_woman", "<SAD>", "<FEMALE>", "gender", "<S2TCHAT> <TEXT2TOKEN>")]


@pytest.fixture(scope="session")
def echat_list(tmp_path_factory):
    d = tmp_path_factory.mktemp("echat")
    rows = []
    for i, (key, emotion, gender, dim, task) in enumerate(ITEMS):
        rows.append({"key": key, "wav": tone(d / f"{key}.wav", 0.6 + 0.1 * i, 250 + 60 * i), "txt": "i hear you",
                     "task": task, "extra": {"question": f"question {i}", "emotion": emotion, "gender": gender,
                                             "age": "<ADULT>", "dimension": dim}})
    path = d / "echat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def write_tone():
    """tone(path, seconds, hz): a 16 kHz PCM16 sine wav."""
    return tone
