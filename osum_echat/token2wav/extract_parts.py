"""Speech-token extraction shared out over the ranks of a torchrun job (bin/extract_speech_tokens.py).

Rank r of W takes the list entries whose index % W == r (raw: lines; shard: tars). A raw list's
rank writes OUT/<LIST name>.split<W>/part.<r> (jsonl, resumable), a shard list's rank its own
tars with their .finished markers; every rank lists its skipped samples in
OUT/skipped.split<W>/part.<r>.tsv. Rank 0 merges, once every rank's marker is there
(osum_echat/job_ranks.py): the output list in list order, skipped.tsv, the summary. One
process (W = 1) writes OUT/<LIST name> and OUT/skipped.tsv directly, as before.
"""
from __future__ import annotations

import collections
import json
import os
import re
from pathlib import Path

from osum_echat.data.sources import read_entries
from osum_echat.progress import follow_in_thread
from osum_echat.utils import get_logger

log = get_logger("osum_echat.extract")
HEADER = "reason\twhere\tkey\tdetail\n"


class Report:
    """Counts and logs skipped samples (the `counter` interface of data.sources), lists them in a tsv."""

    def __init__(self, path: Path):
        self.counts = collections.Counter()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w", encoding="utf-8")
        self.file.write(HEADER)

    def skip(self, reason: str, where: str, key, detail: str = "") -> None:
        self.counts[reason] += 1
        log.warning(f"skip [{reason}] {where}" + (f" key={key}" if key is not None else "") + f": {detail}")
        cells = (reason, where, "" if key is None else str(key), detail)
        self.file.write("\t".join(" ".join(c.split()) for c in cells) + "\n")
        self.file.flush()

    def total(self) -> int:
        return sum(self.counts.values())


def raw_part(out_dir: Path, data: str, rank: int, world: int) -> Path:
    name = Path(data).name
    return out_dir / name if world == 1 else out_dir / f"{name}.split{world}" / f"part.{rank}"


def skipped_part(out_dir: Path, rank: int, world: int) -> Path:
    return out_dir / "skipped.tsv" if world == 1 else out_dir / f"skipped.split{world}" / f"part.{rank}.tsv"


def _jsonl(path: Path) -> list:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a killed rank: its sample is done again
            pass
    return out


def merge_raw(out_dir: Path, data: str, world: int, key_order: dict) -> Path:
    """OUT/<LIST name>: what an earlier merge wrote plus every rank's part, in list order."""
    final = raw_part(out_dir, data, 0, 1)
    by_key = {}
    for record in _jsonl(final) + [r for rank in range(world) for r in _jsonl(raw_part(out_dir, data, rank, world))]:
        by_key.setdefault(str(record["key"]), record)
    records = sorted(by_key.values(), key=lambda r: key_order.get(str(r["key"]), len(key_order)))
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, final)
    return final


_WHERE = re.compile(r"^(.*?):(\d+)")


def merge_skipped(out_dir: Path, world: int) -> Path:
    """OUT/skipped.tsv from every rank's part, in list order."""
    rows = []
    for rank in range(world):
        path = skipped_part(out_dir, rank, world)
        if path.exists():
            rows += [line for line in path.read_text(encoding="utf-8").splitlines()[1:] if line]

    def order(row):
        m = _WHERE.match(row.split("\t")[1] if "\t" in row else "")
        return (m.group(1), int(m.group(2))) if m else ("", 0)
    final = out_dir / "skipped.tsv"
    final.write_text(HEADER + "".join(r + "\n" for r in sorted(rows, key=order)), encoding="utf-8")
    return final


def add_up(infos: list) -> dict:
    """The summary of several ranks: counts summed."""
    total = {"tokenized": 0, "stats": collections.Counter(), "skipped": collections.Counter()}
    for info in infos:
        total["tokenized"] += info["tokenized"]
        total["stats"].update(info["stats"])
        total["skipped"].update(info["skipped"])
    return {"tokenized": total["tokenized"], **total["stats"], "skipped": dict(total["skipped"])}


class CountFile:
    """A rank's progress for rank 0's line: `done failed` rewritten after each batch."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, done: int, failed: int) -> None:
        tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        tmp.write_text(f"{done} {failed}\n")
        os.replace(tmp, self.path)

    @staticmethod
    def read(path: Path) -> tuple[int, int]:
        try:
            done, failed = path.read_text().split()
            return int(done), int(failed)
        except (OSError, ValueError):
            return 0, 0


def raw_keys(args) -> dict:
    """{key: list index} of a raw list: the order rank 0 merges the ranks' parts in."""
    order = {}
    for i, entry in enumerate(read_entries(args.data, "raw", args.root)):
        try:
            order.setdefault(str(json.loads(entry.value)["key"]), i)
        except (ValueError, TypeError, KeyError):
            pass
    return order


def follow_progress(args, ex, out_dir: Path, job):
    """One line over every rank (rank 0 shows it); returns `finish()`."""
    if job is None:
        counts = [0, 0]
        ex.on_progress = lambda done, failed: counts.__setitem__(slice(None), [done, failed])
        return follow_in_thread(lambda: tuple(counts), to_extract(args, out_dir, 1), "extract")
    mine = CountFile(Path(job.marker_dir) / f"rank{job.rank}.count")
    mine.write(0, 0)
    ex.on_progress = mine.write
    if job.rank != 0:
        return lambda: None
    files = [Path(job.marker_dir) / f"rank{r}.count" for r in range(job.world_size)]

    def counts():
        both = [CountFile.read(f) for f in files]
        return sum(d for d, _ in both), sum(f for _, f in both)
    return follow_in_thread(counts, to_extract(args, out_dir, job.world_size), "extract")


def to_extract(args, out_dir: Path, world: int) -> int | None:
    """Samples left to do in a raw list (listed minus already written); None for shard lists."""
    if args.data_type != "raw":
        return None
    done = set()
    for path in [raw_part(out_dir, args.data, 0, 1)] + [raw_part(out_dir, args.data, r, world) for r in range(world)]:
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    done.add(str(json.loads(line)["key"]))
                except (ValueError, KeyError, TypeError):
                    pass
    return max(0, len(read_entries(args.data, "raw", args.root)) - len(done))
