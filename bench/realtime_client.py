"""A scripted OpenAI-Realtime (GA) client for bench_realtime.py: spoken input from espeak-ng, one
turn at a time over a plain `websockets` connection, every event time-stamped on arrival.
Also starts the server as a subprocess and reads its memory."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RATE = 24000  # audio/pcm, both directions
CHUNK_MS = 40
SENTENCES = ["hello, how are you today?", "what is the weather like tomorrow?", "tell me a short story please",
             "I feel a little tired this evening", "can you recommend a good book?", "thank you very much"]


# ------------------------------------------------------------------------------------------ audio

def speech_pcm(text: str, trailing_silence_s: float = 0.0, leading_silence_s: float = 0.0) -> bytes:
    """PCM16 mono at 24 kHz of espeak-ng saying `text`, with silence around it."""
    import soundfile as sf
    import soxr

    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not on PATH: it speaks the benchmark's questions "
                         "(tools/install.sh installs it; or apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "q.wav")
        subprocess.run(["espeak-ng", "-w", path, text], check=True)
        x, rate = sf.read(path, dtype="float32")
    x = soxr.resample(x, rate, RATE)
    x = np.concatenate([np.zeros(int(leading_silence_s * RATE), "float32"), x,
                        np.zeros(int(trailing_silence_s * RATE), "float32")])
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def silence_pcm(seconds: float) -> bytes:
    return bytes(2 * int(seconds * RATE))


def chunks(pcm: bytes, ms: int = CHUNK_MS):
    step = 2 * RATE * ms // 1000
    for i in range(0, len(pcm), step):
        yield pcm[i:i + step]


# ------------------------------------------------------------------------------------------ client

@dataclass
class Turn:
    """One response as the client saw it; times are seconds after t0 (commit sent, or end of the
    user's speech in VAD mode)."""
    session: int
    index: int
    mode: str
    t0: float = 0.0
    events: dict = field(default_factory=dict)   # first arrival of each type (absolute)
    last_audio: float | None = None
    response_id: str | None = None
    status: str = "lost"
    tokens: int = 0
    created: float | None = None
    done: float | None = None
    error: str | None = None
    metadata: dict = field(default_factory=dict)
    barge_started: float | None = None            # barge mode: speech_started heard during the answer
    barge_ms: float | None = None                 # barge mode: speech_started -> last audio delta
    barge_done_ms: float | None = None            # barge mode: speech_started -> response.done

    def after(self, event_type: str):
        t = self.events.get(event_type)
        return None if t is None else 1000 * (t - self.t0)

    @property
    def first_text_ms(self):
        times = [self.events.get(k) for k in ("response.output_audio_transcript.delta", "response.output_text.delta")]
        times = [t for t in times if t is not None]
        return 1000 * (min(times) - self.t0) if times else None


class Client:
    def __init__(self, url: str, api_key: str | None, session_extra: dict):
        self.url, self.api_key, self.session_extra = url, api_key, session_extra
        self.ws = None
        self.queue: asyncio.Queue = asyncio.Queue()
        self.reader = None
        self.seq = 0
        self.session_id = None
        self.finished = set()  # ids of responses already done: their late events are ignored

    async def connect(self, turn_detection):
        from websockets.asyncio.client import connect

        protocols = ["realtime"] + ([f"openai-insecure-api-key.{self.api_key}"] if self.api_key else [])
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.ws = await connect(self.url, subprotocols=protocols, additional_headers=headers, max_size=None,
                                open_timeout=60)
        self.reader = asyncio.create_task(self._read())
        created = await self.expect("session.created", 60)
        self.session_id = created["session"].get("id")
        session = {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE},
                                                           "turn_detection": turn_detection},
                                                 "output": {"format": {"type": "audio/pcm", "rate": RATE}}}}
        await self.send({"type": "session.update", "session": {**session, **self.session_extra}})
        await self.expect("session.updated", 60)

    async def _read(self):
        try:
            async for msg in self.ws:
                now = time.perf_counter()
                await self.queue.put((now, json.loads(msg)))
        except Exception as e:  # noqa: BLE001 - the connection ended; the waiter sees it
            await self.queue.put((time.perf_counter(), {"type": "_closed", "reason": repr(e)}))
        else:
            await self.queue.put((time.perf_counter(), {"type": "_closed", "reason": "closed"}))

    async def send(self, event: dict):
        self.seq += 1
        await self.ws.send(json.dumps({**event, "event_id": f"evt_bench_{self.seq}"}))

    async def append(self, pcm: bytes):
        await self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})

    async def next(self, timeout: float):
        now, event = await asyncio.wait_for(self.queue.get(), timeout)
        if event["type"] == "_closed":
            raise ConnectionError(f"server closed the connection: {event['reason']}")
        return now, event

    async def expect(self, event_type: str, timeout: float):
        deadline = time.perf_counter() + timeout
        while True:
            _, event = await self.next(max(0.01, deadline - time.perf_counter()))
            if event["type"] == event_type:
                return event
            if event["type"] == "error":
                raise RuntimeError(f"error while waiting for {event_type}: {event['error']}")

    async def close(self):
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


def note(turn: Turn, now: float, event: dict):
    """Record one server event into the turn it belongs to."""
    t = event["type"]
    turn.events.setdefault(t, now)
    if t == "response.created":
        turn.response_id, turn.created = event["response"]["id"], now
    elif t == "response.output_audio.delta":
        turn.last_audio = now
    elif t == "response.done":
        r = event["response"]
        turn.status, turn.done = r.get("status", "?"), now
        turn.tokens = ((r.get("usage") or {}).get("output_tokens")) or 0
        turn.metadata = r.get("metadata") or {}
    elif t == "error":
        turn.error = f"{event['error'].get('code')}: {event['error'].get('message')}"


async def finish_response(client: Client, turn: Turn, timeout: float):
    """Read events until this turn's response.done (or an error that ends the turn)."""
    deadline = time.perf_counter() + timeout
    while turn.done is None:
        now, event = await client.next(max(0.01, deadline - time.perf_counter()))
        rid = event.get("response_id") or (event.get("response") or {}).get("id")
        if rid in client.finished or (turn.response_id is not None and rid is not None and rid != turn.response_id):
            continue  # a late event of an earlier response
        note(turn, now, event)
        if event["type"] == "error" and turn.response_id is None:
            turn.status = "error"
            return
    client.finished.add(turn.response_id)


# ------------------------------------------------------------------------------------------ server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m osum_echat.bin.serve` as a subprocess on a free loopback port, log to a file."""

    def __init__(self, args: list, log_path: str, ready_timeout: float = 900):
        self.port = free_port()
        self.log_path = log_path
        self.log = open(log_path, "w")
        root = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "osum_echat.bin.serve", *args, "--host", "127.0.0.1",
                                      "--port", str(self.port)], cwd=root, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited ({self.proc.returncode}); its log:\n{Path(log_path).read_text()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5)
                break
            except OSError:
                if time.time() > deadline:
                    self.stop()
                    raise SystemExit(f"the server did not answer /healthz in {ready_timeout:.0f} s; log: {log_path}")
                time.sleep(0.5)
        self.url = f"ws://127.0.0.1:{self.port}/v1/realtime?model=osum-echat"

    def pids(self) -> list:
        """The server and its children (the token2wav process)."""
        pids = [self.proc.pid]
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
        return pids

    def rss_mb(self) -> float:
        """Resident memory of the server and its children (the token2wav process), MB."""
        total = 0.0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
            except (OSError, StopIteration):
                pass
        return total if total else float("nan")

    def cpu_seconds(self) -> dict:
        """CPU time (user + system) so far: {"server": its own, "children": the token2wav process's}."""
        tick = os.sysconf("SC_CLK_TCK")
        out = {"server": 0.0, "children": 0.0}
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out["server" if pid == self.proc.pid else "children"] += (int(fields[11]) + int(fields[12])) / tick
        return out

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log_path).read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
