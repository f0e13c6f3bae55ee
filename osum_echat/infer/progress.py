"""Progress of a multi-process batch decode (infer_with_shards_or_raw.sh runs it beside the workers).

  python -m osum_echat.infer.progress --output OUT --world_size N --data LIST --data_type raw

Counts the result and failure lines the processes append to OUT.split<N>/part.*: one line over
all processes with done/total, utterances/s and ETA (the total needs the list's size: raw lists),
rewritten in place on a terminal, a plain line at each 10% and every 30 s in a log
(osum_echat/progress.py). Stops when OUT.split<N>/.done appears (or the calling shell is gone) and
prints the final line. bin/infer.py's rank 0 runs `watch` in a thread under torchrun.
"""
from __future__ import annotations

import argparse
import os
import sys

from osum_echat.infer.results import Part, read_records
from osum_echat.progress import Progress, follow, follow_in_thread

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


def to_decode(output: str, world_size: int, data: str, data_type: str) -> int | None:
    """Utterances a run has left to do (raw lists: listed lines minus results already written);
    None where the list does not say (shard and combine lists name tars)."""
    if data_type != "raw":
        return None
    done = {r["key"] for r in read_records(output + ".jsonl")}
    for r in range(world_size):
        done |= {r["key"] for r in read_records(Part.of(output, r, world_size).jsonl)}
    return max(0, listed_lines(data) - len(done))


def count_parts(output: str, world_size: int):
    """A function returning (results + failures, failures) the processes' part files hold now."""
    parts = [Part.of(output, r, world_size) for r in range(world_size)]
    results = [LineCounter(part.jsonl) for part in parts]
    failures = [LineCounter(part.failed) for part in parts]

    def counts():
        failed = sum(c.count() for c in failures)
        return sum(c.count() for c in results) + failed, failed
    return counts


def watch(output: str, world_size: int, total: int | None, stop=None, stream=None, tty=None) -> Progress:
    """Follow the part files until `stop()` (default: OUT.split<N>/.done exists or the calling
    shell is gone); one live line on a terminal, plain lines in a log (osum_echat/progress.py)."""
    counts = count_parts(output, world_size)
    base = sum(LineCounter(Part.of(output, r, world_size).jsonl).count() for r in range(world_size))
    if stop is None:
        done_flag, parent = os.path.join(f"{output}.split{world_size}", ".done"), os.getppid()

        def stop():
            return os.path.exists(done_flag) or os.getppid() != parent

    def this_run():  # a rerun: results the parts held before are not this run's
        n, failed = counts()
        return n - base, failed
    return follow(this_run, total, stop, desc="decode", unit="utt", stream=stream, tty=tty)


def watch_in_thread(output: str, world_size: int, data: str, data_type: str):
    """`watch` in a thread (rank 0 of a torchrun job); returns `finish()`."""
    counts = count_parts(output, world_size)
    base = sum(LineCounter(Part.of(output, r, world_size).jsonl).count() for r in range(world_size))

    def this_run():
        n, failed = counts()
        return n - base, failed
    return follow_in_thread(this_run, to_decode(output, world_size, data, data_type), desc="decode")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", required=True)
    ap.add_argument("--world_size", type=int, required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--data_type", default="raw")
    args = ap.parse_args(argv)
    watch(args.output, args.world_size, to_decode(args.output, args.world_size, args.data, args.data_type))
    return 0


if __name__ == "__main__":
    sys.exit(main())
