"""Start `python -m osum_echat.bin.serve` as a real subprocess on a free loopback port (for any test).

    from server_proc import start_server, stop_server      # tests/serve on sys.path (see conftest.py)
    base_url, proc = start_server(["--checkpoint", ckpt, "--config", cfg, "--token2wav_dir", t2w])
    ...  # base_url is "http://127.0.0.1:PORT"; OpenAI(base_url=base_url + "/v1", api_key=...)
    stop_server(proc)                                      # proc.log_path holds the server's output

Other test directories can load this file by path:
    spec = importlib.util.spec_from_file_location("server_proc", REPO_ROOT / "tests/serve/server_proc.py")
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list, timeout: float = 120.0, env: dict | None = None):
    """(base_url, proc) once GET /healthz answers; RuntimeError with the server's log if it does not."""
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="osum_serve_", suffix=".log", delete=False)
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, "-m", "osum_echat.bin.serve", "--host", "127.0.0.1", "--port", str(port),
           "--log_level", "warning", *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    proc.log_path = log.name
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(base_url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return base_url, proc
        except OSError:
            time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"server did not become healthy (exit {proc.returncode}):\n{server_log(proc)}")


def server_log(proc) -> str:
    return Path(proc.log_path).read_text(errors="replace")


def stop_server(proc, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
