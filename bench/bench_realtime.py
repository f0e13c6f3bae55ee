"""Live-dialogue latency and throughput over loopback (issue 17, Benchmark).

    python bench/bench_realtime.py [--checkpoint exp/demo/stage2/final.pt] [--token2wav_dir exp/demo/token2wav_tiny]
        [--config YAML] [--url ws://HOST:PORT/v1/realtime] [--turns 20] [--sessions 1,4]
        [--modes commit,vad,barge] [--load] [--server_args "..."] [--session_json '{...}']

Starts `python -m osum_echat.bin.serve` on a free loopback port (or talks to --url), then scripted
clients speak espeak-ng questions as PCM16 at 24 kHz and time every server event on arrival:
  commit  the whole question appended, then input_audio_buffer.commit + response.create; times from
          the commit: first text delta, first audio delta, response.done (1 and 4 sessions at once)
  vad     server VAD; the question streamed at real-time pace with silence after it; times from the
          end of the speech: speech_stopped, first text, first audio, response.done
  barge   server VAD; once the answer's audio flows the client speaks again: speech_started -> the
          last audio delta of the interrupted answer
Prints one line per turn, p50/p90 per measure, the aggregate decode tokens/s (ids the server's shared
decode loop produced for all sessions, from its /metrics, over the run's wall time), the loop's own
rate over the seconds it spent prefilling and stepping, the CPU the server, its token2wav process and
the clients used (cores, ms per answer: with it, the most the 4-session ratio can be on this machine),
the end-to-end output tokens/s (over the time at least one response was running, token2wav included)
and the issue's targets as PASS/FAIL lines.
--load: 8 sessions x 10 turns, bounded by --load_timeout: every turn answered or errored, server RSS
after the run within 10% of after a warm-up of the same load, no traceback in the server log.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter, deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from realtime_client import (RATE, SENTENCES, Client, Server, Turn, chunks, finish_response,  # noqa: E402
                             note, silence_pcm, speech_pcm)

CHUNK_S = 0.04
LEAD_S = 0.3  # silence before each question (the interruption of a barge turn starts without it)
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()  # this machine's
VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
       "create_response": True, "interrupt_response": True}


# ------------------------------------------------------------------------------------------ turns

class Mic:
    """A live microphone: 40 ms chunks at real-time pace for the whole session, silence unless
    something is being said. say(pcm) returns when its last chunk went out (the end of that speech
    as the server can know it)."""

    def __init__(self, client: Client):
        self.client, self.queue, self.task = client, deque(), None

    def start(self):
        self.task = asyncio.create_task(self._run())

    async def say(self, pcm: bytes) -> float:
        done = asyncio.get_running_loop().create_future()
        self.queue.append((deque(chunks(pcm)), done))
        return await done

    async def _run(self):
        quiet, start, i = silence_pcm(CHUNK_S), time.perf_counter(), 0
        while True:
            i += 1
            await asyncio.sleep(max(0.0, start + i * CHUNK_S - time.perf_counter()))
            if not self.queue:
                await self.client.append(quiet)
                continue
            parts, done = self.queue[0]
            await self.client.append(parts.popleft())
            if not parts:
                self.queue.popleft()
                if not done.done():
                    done.set_result(time.perf_counter())

    async def stop(self):
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def commit_turn(client: Client, turn: Turn, pcm: bytes, timeout: float):
    for c in chunks(pcm, 500):
        await client.append(c)
    await client.send({"type": "input_audio_buffer.commit"})
    turn.t0 = time.perf_counter()
    await client.send({"type": "response.create"})
    await finish_response(client, turn, timeout)


async def vad_turn(client: Client, mic: Mic, turn: Turn, pcm: bytes, timeout: float):
    turn.t0 = await mic.say(pcm)
    await finish_response(client, turn, timeout)


async def barge_turn(client: Client, mic: Mic, turn: Turn, pcm: bytes, interrupt: bytes, timeout: float,
                     after_s: float):
    """A VAD turn interrupted by more speech `after_s` into its audio. Sets turn.barge_ms (speech_started
    -> last audio delta of this response; 0 if none came after it), or leaves it None when the answer
    ended before the interruption was heard. Returns the turn the interruption itself causes, if any."""
    turn.t0 = await mic.say(pcm)
    follow = Turn(turn.session, turn.index, "vad")
    speaking, sender = [], None

    async def speak_again():
        await asyncio.sleep(after_s)
        speaking.append(True)
        follow.t0 = await mic.say(interrupt)

    deadline = time.perf_counter() + timeout
    while turn.done is None:
        now, event = await client.next(max(0.01, deadline - time.perf_counter()))
        rid = event.get("response_id") or (event.get("response") or {}).get("id")
        if rid in client.finished or (turn.response_id and rid and rid != turn.response_id):
            continue
        if event["type"] == "input_audio_buffer.speech_started" and speaking:
            turn.barge_started = turn.barge_started or now
            continue
        note(turn, now, event)
        if event["type"] == "response.output_audio.delta" and sender is None:
            sender = asyncio.create_task(speak_again())
    client.finished.add(turn.response_id)
    if turn.barge_started is not None:
        turn.barge_ms = max(0.0, 1000 * ((turn.last_audio or 0) - turn.barge_started))
        turn.barge_done_ms = 1000 * (turn.done - turn.barge_started)
    if sender is None or not speaking:  # the answer ended before the interruption began
        if sender:
            sender.cancel()
        return None
    await sender
    await finish_response(client, follow, timeout)
    return follow


async def run_session(url, api_key, extra, sid, n_turns, mode, questions, args, out, barrier=None):
    """One session's turns; `barrier` (commit mode, --together): every session asks each turn at once."""
    client = Client(url, api_key, extra)
    mic = Mic(client)
    try:
        await client.connect(None if mode == "commit" else VAD)
        if mode != "commit":
            mic.start()
        for i in range(n_turns):
            turn = Turn(sid, i, mode)
            q = questions[(sid + i) % len(questions)]
            try:
                if barrier is not None:
                    await barrier.wait()
                if mode == "commit":
                    await commit_turn(client, turn, q, args.turn_timeout)
                elif mode == "vad":
                    await vad_turn(client, mic, turn, q, args.turn_timeout)
                else:
                    interrupt = questions[(sid + i + 1) % len(questions)][2 * int(LEAD_S * RATE):]
                    follow = await barge_turn(client, mic, turn, q, interrupt,
                                              args.turn_timeout, args.barge_after)
                    if follow is not None:
                        out.append(follow)
                        print(turn_line(follow), flush=True)
            except (asyncio.TimeoutError, TimeoutError):
                turn.error = turn.error or f"no response.done within {args.turn_timeout:.0f} s"
            except ConnectionError as e:
                turn.error = str(e)
                out.append(turn)
                break
            out.append(turn)
            print(turn_line(turn), flush=True)
    except Exception as e:  # noqa: BLE001 - a session that could not start is a result, not a crash
        out.append(Turn(sid, -1, mode, error=f"session failed: {e!r}"))
    finally:
        if barrier is not None:
            await barrier.abort()  # the others do not wait for this session's next turn
        await mic.stop()
        await client.close()


async def run(url, args, extra, n_sessions, n_turns, mode, questions) -> tuple:
    out: list = []
    start = time.perf_counter()
    barrier = asyncio.Barrier(n_sessions) if getattr(args, "together", False) and mode == "commit" else None
    await asyncio.gather(*(run_session(url, args.api_key, extra, s, n_turns, mode, questions, args, out, barrier)
                           for s in range(n_sessions)))
    return out, time.perf_counter() - start


def cpu_seconds(server) -> dict | None:
    """CPU seconds so far of the server, its token2wav process and this process's clients (None for --url)."""
    if server is None:
        return None
    return {**server.cpu_seconds(), "clients": time.process_time()}


def decoder_counters(url: str, api_key: str) -> dict:
    """The server's decode-loop counters from /metrics: {"tokens": ids decoded, "busy": seconds}."""
    u = urllib.parse.urlsplit(url)
    scheme = "https" if u.scheme == "wss" else "http"
    req = urllib.request.Request(f"{scheme}://{u.netloc}/metrics",
                                 headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    text = urllib.request.urlopen(req, timeout=10).read().decode()
    values = dict(line.split() for line in text.splitlines() if line.startswith(("osum_decode_", "osum_token2wav_")))
    return {k: float(values.get(name, 0)) for k, name in
            (("tokens", "osum_decode_tokens"), ("busy", "osum_decode_busy_seconds"),
             ("prefill", "osum_decode_prefill_seconds"), ("positions", "osum_decode_prefill_positions"),
             ("steps", "osum_decode_steps"), ("solves", "osum_token2wav_solves"),
             ("windows", "osum_token2wav_solved_windows"))}


# ------------------------------------------------------------------------------------------ report

def ms(v):
    return "-" if v is None else f"{v:.0f}"


def turn_line(t: Turn) -> str:
    extra = f" | barge-in {ms(t.barge_ms)} ms (-> done {ms(t.barge_done_ms)} ms)" if t.mode == "barge" else ""
    meta = f" server {json.dumps(t.metadata, separators=(',', ':'))}" if t.metadata else ""
    return (f"  [{t.mode} s{t.session} t{t.index}] stopped {ms(t.after('input_audio_buffer.speech_stopped'))} | "
            f"text {ms(t.first_text_ms)} | audio {ms(t.after('response.output_audio.delta'))} | "
            f"done {ms(t.after('response.done'))} ms | {t.tokens} tok | {t.status}"
            f"{' | ' + t.error if t.error else ''}{extra}{meta}")


def pct(values, q):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def summary(name: str, turns: list) -> dict:
    cols = {"speech_stopped": [t.after("input_audio_buffer.speech_stopped") for t in turns],
            "first_text": [t.first_text_ms for t in turns],
            "first_audio": [t.after("response.output_audio.delta") for t in turns],
            "done": [t.after("response.done") for t in turns],
            "barge_in": [t.barge_ms for t in turns],
            "barge_to_done": [t.barge_done_ms for t in turns]}
    spans = sorted((t.created, t.done) for t in turns if t.created is not None and t.done is not None)
    busy, end = 0.0, None
    for a, b in spans:  # union of the intervals in which some response was running
        if end is None or a > end:
            busy, end = busy + (b - a), b
        elif b > end:
            busy, end = busy + (b - end), b
    tokens = sum(t.tokens for t in turns)
    # answered: a response.done with an answer (completed, or incomplete: a decode cap ended it)
    statuses = dict(Counter(t.status for t in turns))
    s = {"name": name, "turns": len(turns), "statuses": statuses,
         "answered": sum(t.status in ("completed", "incomplete") for t in turns),
         "tokens": tokens, "tok_s": tokens / busy if busy else None}
    print(f"{name}: {s['answered']}/{len(turns)} answered ({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))}), "
          f"{tokens} output tokens, end to end "
          f"{s['tok_s'] or 0:.1f} tokens/s (over {busy:.1f} s with a response running)")
    for k, v in cols.items():
        s[k] = {"p50": pct(v, 50), "p90": pct(v, 90), "n": sum(x is not None for x in v)}
        if s[k]["n"]:
            print(f"  {k:14s} p50 {ms(s[k]['p50']):>6} ms   p90 {ms(s[k]['p90']):>6} ms   (n={s[k]['n']})")
    return s


def check(name: str, ok, detail: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
    return bool(ok)


def targets(res: dict) -> bool:
    ok = True
    one, four = res.get("commit x1"), res.get("commit x4")
    if one:
        p50 = one["first_audio"]["p50"]
        ok &= check("first audio p50 <= 300 ms after commit (1 session)", p50 is not None and p50 <= 300,
                    f"{ms(p50)} ms")
    if "barge x1" in res:
        b = res["barge x1"]["barge_in"]
        detail = (f"p50 {ms(b['p50'])} ms, p90 {ms(b['p90'])} ms, n={b['n']}" if b["n"] else
                  "not measured: every answer ended before the interruption was heard (longer answers: "
                  "--server_args '--max_speech_tokens N')")
        ok &= check("barge-in <= 150 ms (speech_started -> last audio delta, p90)",
                    b["p90"] is not None and b["p90"] <= 150, detail)
    if one and four:
        ok &= check("4 sessions: every turn answered", four["answered"] == four["turns"],
                    f"{four['answered']}/{four['turns']}")
        a1, a4 = one["first_audio"]["p90"], four["first_audio"]["p90"]
        ok &= check("4 sessions: p90 first audio <= 2x the 1-session p90", a1 and a4 and a4 <= 2 * a1,
                    f"{ms(a4)} vs {ms(a1)} ms, ratio {a4 / a1 if a1 and a4 else float('nan'):.2f}")
        d1, d4 = one.get("aggregate_tok_s"), four.get("aggregate_tok_s")
        r = d4 / d1 if d1 and d4 else float("nan")
        ok &= check("4 sessions: aggregate decode tokens/s >= 2.5x one session", r >= 2.5,
                    f"{d4 or 0:.1f} vs {d1 or 0:.1f} ids/s (all sessions' ids over the run's wall time), "
                    f"ratio {r:.2f}")
        if one.get("cores") and four.get("cpu_per_id"):
            bound = CORES / one["cores"] * one["cpu_per_id"] / four["cpu_per_id"]
            print(f"info 4 sessions: the most that ratio can be on this machine: {CORES} cores / "
                  f"{one['cores']:.2f} used at 1 session x CPU per id at 1 / at 4 sessions "
                  f"({one['cpu_per_id'] * 1e3:.2f} / {four['cpu_per_id'] * 1e3:.2f} ms) = {bound:.2f}")
        d1, d4 = one.get("decode_tok_s"), four.get("decode_tok_s")
        r = d4 / d1 if d1 and d4 else float("nan")
        print(f"info 4 sessions: decode-loop rate (ids per second the loop was busy) {d4 or 0:.1f} vs "
              f"{d1 or 0:.1f}, ratio {r:.2f}")
        r = four["tok_s"] / one["tok_s"] if one["tok_s"] and four["tok_s"] else float("nan")
        print(f"info 4 sessions: end-to-end output tokens/s (any response running, token2wav included) "
              f"{four['tok_s'] or 0:.1f} vs {one['tok_s'] or 0:.1f}, ratio {r:.2f}")
    return ok


# ------------------------------------------------------------------------------------------ main

async def load_test(url, args, extra, questions, server) -> bool:
    n, k = args.load_sessions, args.load_turns
    print(f"== load: {n} sessions x {k} turns (commit mode), bounded by {args.load_timeout:.0f} s")
    # warm-up: the same load once (conversations that reach max_turns, every allocator arena and cache
    # size in use), so that growth over the measured run means memory that is never given back
    warm, _ = await run(url, args, extra, n, k, "commit", questions)
    await asyncio.sleep(2)
    rss_warm = server.rss_mb() if server else None
    try:
        turns, wall = await asyncio.wait_for(run(url, args, extra, n, k, "commit", questions), args.load_timeout)
    except (asyncio.TimeoutError, TimeoutError):
        return check("load finished in time", False, f"not done after {args.load_timeout:.0f} s")
    await asyncio.sleep(2)  # let the server settle before reading its memory
    summary(f"load {n}x{k}", turns)
    ok = check("every turn answered or errored", len(turns) == n * k and all(t.done or t.error for t in turns),
               f"{sum(t.status in ('completed', 'incomplete') for t in turns)} answered, {sum(bool(t.error) for t in turns)} "
               f"errored, {n * k - len(turns) + sum(not (t.done or t.error) for t in turns)} lost, {wall:.0f} s")
    if server:
        rss = server.rss_mb()
        ok &= check("server RSS after the run within 10% of after warm-up", rss <= 1.10 * rss_warm,
                    f"{rss:.0f} MB vs {rss_warm:.0f} MB, ratio {rss / rss_warm:.3f}")
        tb = server.log_text().count("Traceback")
        ok &= check("no traceback in the server log", tb == 0, f"{tb} traceback(s) in {server.log_path}")
    return ok


async def main_async(args) -> int:
    extra = json.loads(args.session_json) if args.session_json else {}
    print("speaking the questions with espeak-ng ...", flush=True)
    questions = [speech_pcm(s, leading_silence_s=LEAD_S) for s in SENTENCES]
    server = None
    if args.url:
        url = args.url
    else:
        path = os.path.abspath  # the server runs in the repository root
        srv_args = ["--checkpoint", path(args.checkpoint)] + (["--config", path(args.config)] if args.config else [])
        srv_args += (["--token2wav_dir", path(args.token2wav_dir)] if args.token2wav_dir else [])
        srv_args += (["--api_key", args.api_key] if args.api_key else []) + shlex.split(args.server_args)
        if "--max_sessions" not in srv_args:  # room for every concurrent client of this run
            most = max([int(x) for x in args.sessions.split(",")] + [args.load_sessions if args.load else 1])
            srv_args += ["--max_sessions", str(most)]
        log = args.server_log or tempfile.NamedTemporaryFile(prefix="bench_realtime_server_", suffix=".log",
                                                             delete=False).name
        print(f"starting the server: {' '.join(srv_args)} (log {log})", flush=True)
        server = Server(srv_args, log)
        url = server.url
    try:
        print("== warm-up turn (not counted)", flush=True)
        await run(url, args, extra, 1, 1, "commit", questions)
        if args.load:
            return 0 if await load_test(url, args, extra, questions, server) else 1
        res = {}
        for mode in args.modes.split(","):
            counts = [int(x) for x in args.sessions.split(",")] if mode == "commit" else [1]
            for n in counts:
                turns_each = args.barge_turns if mode == "barge" else args.turns
                print(f"== {mode}, {n} session(s) x {turns_each} turns", flush=True)
                before = decoder_counters(url, args.api_key)
                cpu_before = cpu_seconds(server)
                turns, wall = await run(url, args, extra, n, turns_each, mode, questions)
                cpu_after = cpu_seconds(server)
                after = decoder_counters(url, args.api_key)
                res[f"{mode} x{n}"] = s = summary(f"{mode} x{n}", [t for t in turns if t.mode == mode])
                busy = after["busy"] - before["busy"]
                s["decode_tok_s"] = (after["tokens"] - before["tokens"]) / busy if busy > 0 else None
                d = {k: after[k] - before[k] for k in after}
                s["aggregate_tok_s"], s["wall_s"] = d["tokens"] / wall, wall
                print(f"  aggregate: {d['tokens']:.0f} ids decoded for {n} session(s) in the run's {wall:.2f} s: "
                      f"{s['aggregate_tok_s']:.1f} tokens/s")
                print(f"  decoder: {d['tokens']:.0f} ids in {busy:.2f} s of prefill + steps: "
                      f"{s['decode_tok_s'] or 0:.1f} decode tokens/s (the server's /metrics); prefill "
                      f"{d['prefill']:.2f} s for {d['positions']:.0f} positions, {d['steps']:.0f} steps of "
                      f"{d['tokens'] / max(d['steps'], 1):.2f} rows, {1000 * (busy - d['prefill']) / max(d['steps'], 1):.1f} ms each")
                if d["solves"]:
                    print(f"  token2wav: {d['windows']:.0f} windows in {d['solves']:.0f} ODE solves "
                          f"({d['windows'] / d['solves']:.2f} per solve)")
                if cpu_after:
                    cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
                    total = sum(cpu.values())
                    s["cores"], s["cpu_per_id"] = total / wall, total / max(d["tokens"], 1)
                    print(f"  CPU: server {cpu['server']:.2f} s + token2wav process {cpu['children']:.2f} s + clients "
                          f"{cpu['clients']:.2f} s in the run's {wall:.2f} s = {s['cores']:.2f} of {CORES} cores; "
                          f"{1000 * total / max(len(turns), 1):.0f} ms per answer")
                if mode == "barge":
                    follow = [t for t in turns if t.mode == "vad"]
                    if follow:
                        summary("turns that followed a barge-in (vad)", follow)
        print()
        ok = targets(res)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
        return 0 if ok else 1
    finally:
        if server:
            tb = server.log_text().count("Traceback")
            if tb and not args.load:
                print(f"note: {tb} traceback(s) in the server log {server.log_path}")
            server.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "exp/demo/stage2/final.pt"))
    ap.add_argument("--config", default=None, help="default: the train.yaml beside the checkpoint")
    ap.add_argument("--token2wav_dir", default=str(ROOT / "exp/demo/token2wav_tiny"), help="'' for text only")
    ap.add_argument("--url", default=None, help="a running server's ws://.../v1/realtime (else one is started)")
    ap.add_argument("--api_key", default=None)
    ap.add_argument("--server_args", default="", help="more flags for osum_echat.bin.serve")
    ap.add_argument("--server_log", default=None)
    ap.add_argument("--session_json", default="", help="merged into session.update's session object")
    ap.add_argument("--turns", type=int, default=20, help="turns per session (commit, vad)")
    ap.add_argument("--barge_turns", type=int, default=10)
    ap.add_argument("--barge_after", type=float, default=0.0,
                    help="seconds after the answer's first audio delta to start speaking; the answer must still be "
                         "streaming when the server hears it to be interrupted")
    ap.add_argument("--sessions", default="1,4", help="concurrent sessions for the commit mode")
    ap.add_argument("--modes", default="commit,vad,barge")
    ap.add_argument("--turn_timeout", type=float, default=120.0)
    ap.add_argument("--together", action="store_true",
                    help="commit mode: the sessions ask each turn at the same moment (peak concurrency) instead of "
                         "each asking again as soon as its last answer is done")
    ap.add_argument("--load", action="store_true")
    ap.add_argument("--load_sessions", type=int, default=8)
    ap.add_argument("--load_turns", type=int, default=10)
    ap.add_argument("--load_timeout", type=float, default=900.0)
    ap.add_argument("--json", default=None, help="write the summaries here")
    return asyncio.run(main_async(ap.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
