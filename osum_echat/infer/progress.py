"""Progress of a multi-process batch decode (infer_with_shards_or_raw.sh runs it beside the workers).

  python -m osum_echat.infer.progress --output OUT --world_size N --data LIST --data_type raw

Counts the result and failure lines the processes append to OUT.split<N>/part.*: a bar with
utterances/s and ETA on a terminal (the ETA needs the list's size: raw lists), a line every
30 s otherwise. Stops when OUT.split<N>/.done appears (or the calling shell is gone) and prints
one summary line.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from osum_echat.infer.results import Part

POLL_SECONDS = 0.5
LOG_EVERY_SECONDS = 30.0


class LineCounter:
    """Lines of a file that only grows (or is emptied and starts again), read incrementally."""

    def __init__(self, path: str):
        self.path, self.offset, self.lines = path, 0, 0

    def count(self) -> int:
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return self.lines
        if size < self.offset:
            self.offset, self.lines = 0, 0
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(size - self.offset)
        self.offset += len(data)
        self.lines += data.count(b"\n")
        return self.lines


def listed_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def watch(output: str, world_size: int, total: int | None) -> None:
    parts = [Part.of(output, r, world_size) for r in range(world_size)]
    counters = [LineCounter(p) for part in parts for p in (part.jsonl, part.failed)]
    done_flag = os.path.join(f"{output}.split{world_size}", ".done")
    parent = os.getppid()
    start, first, last_log = time.time(), None, 0.0
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, unit="utt", dynamic_ncols=True, file=sys.stderr)
    n = 0
    while True:
        finished = os.path.exists(done_flag) or os.getppid() != parent
        n = sum(c.count() for c in counters)
        first = n if first is None else first
        now = time.time()
        if bar is not None:
            bar.update(n - bar.n)
        elif now - last_log >= LOG_EVERY_SECONDS and not finished:
            rate = (n - first) / max(now - start, 1e-9)
            eta = f", ETA {(total - n) / rate:.0f} s" if total and rate > 0 else ""
            print(f"progress: {n}{f'/{total}' if total else ''} utterances, {rate:.2f} utt/s{eta}", flush=True)
            last_log = now
        if finished:
            break
        time.sleep(POLL_SECONDS)
    if bar is not None:
        bar.close()
    seconds = time.time() - start
    print(f"summary: {n - first} utterances decoded or failed in this run, {seconds:.1f} s, "
          f"{(n - first) / max(seconds, 1e-9):.2f} utt/s", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", required=True)
    ap.add_argument("--world_size", type=int, required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--data_type", default="raw")
    args = ap.parse_args(argv)
    watch(args.output, args.world_size, listed_lines(args.data) if args.data_type == "raw" else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
