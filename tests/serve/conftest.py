"""Server tests: a real `osum_echat.bin.serve` subprocess per module (tiny checkpoint from tests/conftest.py)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # server_proc, for this directory's test modules
from server_proc import start_server, stop_server, server_log  # noqa: E402

API_KEY = "test-key-123"


@pytest.fixture(scope="session")
def spoken_wav(tmp_path_factory):
    """'hello, how are you today' spoken by espeak-ng (22,050 Hz mono)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (tools/install.sh installs it: apt-get install espeak-ng)")
    path = tmp_path_factory.mktemp("speech") / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "hello, how are you today"], check=True)
    return str(path)


@pytest.fixture(scope="session")
def spoken_wav2(spoken_wav):
    """A second question, 'what is the weather like'."""
    path = Path(spoken_wav).with_name("weather.wav")
    subprocess.run(["espeak-ng", "-w", str(path), "what is the weather like"], check=True)
    return str(path)


def serve(args):
    base_url, proc = start_server(args)
    try:
        yield base_url
    finally:
        stop_server(proc)
        log = server_log(proc)
        assert "Traceback" not in log, f"the server logged a traceback:\n{log}"
