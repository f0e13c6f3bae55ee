"""Continuous batching without the server: aggregate decode ids/s of N concurrent `ChatPipeline.stream`s
vs one, and the decode step time by rows in the batch.

    python bench/bench_scheduler.py --checkpoint exp/demo/stage2/final.pt --wav WAV --sessions 1 4

Text and speech ids only (no token2wav unless --token2wav_dir): the LLM side of the realtime bench's
"aggregate decode tokens/s at 1 vs 4 sessions". Greedy; every session asks the same question with its
own key, started together.
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time

from osum_echat.config import resolve_config
from osum_echat.generation import scheduler as scheduler_module
from osum_echat.infer.runtime import ChatPipeline


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--config", default=None)
    ap.add_argument("--token2wav_dir", default=None)
    ap.add_argument("--wav", required=True)
    ap.add_argument("--task", default="<S2TCHAT> <TEXT2TOKEN>")
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--max_text_tokens", type=int, default=20)
    ap.add_argument("--max_speech_tokens", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3, help="runs per session count; the best is printed")
    args = ap.parse_args(argv)
    pipe = ChatPipeline.from_files(resolve_config(args.config, args.checkpoint), args.checkpoint,
                                   args.token2wav_dir, device="cpu")
    kw = dict(max_text_tokens=args.max_text_tokens, max_speech_tokens=args.max_speech_tokens, greedy=True)
    step_times = []
    real_step = scheduler_module.Scheduler._step

    def timed_step(self, batch):
        rows, t0 = len(batch.rows), time.perf_counter()
        real_step(self, batch)
        step_times.append((rows, time.perf_counter() - t0))

    scheduler_module.Scheduler._step = timed_step
    list(pipe.stream(args.task, wav=args.wav, **kw))  # warm-up
    rates = {}
    for n in args.sessions:
        best = 0.0
        for _ in range(args.repeat):
            def one(i):
                for _ in pipe.stream(args.task, wav=args.wav, key=f"s{i}", **kw):
                    pass

            threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
            first, t0 = len(step_times), time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ids = sum(rows for rows, _ in step_times[first:])  # one id per row per step
            best = max(best, ids / (time.perf_counter() - t0))
        rates[n] = best
        print(f"{n} session(s): {best:.0f} decoded ids/s (best of {args.repeat}; prompt build and prefill included)")
    by_rows = {}
    for rows, dt in step_times:
        by_rows.setdefault(rows, []).append(dt)
    for rows in sorted(by_rows):
        if len(by_rows[rows]) >= 10:
            print(f"  step with {rows} row(s): median {1000 * statistics.median(by_rows[rows]):.2f} ms "
                  f"({len(by_rows[rows])} steps)")
    if 1 in rates:
        for n in rates:
            if n != 1:
                print(f"aggregate {n} vs 1 session: {rates[n] / rates[1]:.2f}x")
    pipe.scheduler.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
