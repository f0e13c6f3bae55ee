"""Result files of batch inference (no torch: the merge and the progress watcher import only this).

One process writes OUT.split<world_size>/part.<rank>{,.jsonl,.failed}, appending as it goes;
`merge` joins the parts and any earlier merged result into OUT, OUT.jsonl, OUT.failed and the
report, in list order (see osum_echat/infer/batch.py for what each holds).
"""
from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from osum_echat.eval.report import build_report, format_report, write_report
from osum_echat.progress import name_failures
from osum_echat.utils import get_logger

log = get_logger("osum_echat.infer")


@dataclass(frozen=True)
class Part:
    """The files one process writes."""
    scp: str
    jsonl: str
    failed: str

    @classmethod
    def of(cls, output: str, rank: int, world_size: int) -> "Part":
        base = os.path.join(f"{output}.split{world_size}", f"part.{rank}")
        return cls(base, base + ".jsonl", base + ".failed")


class FailureLog:
    """The dataset's skip counter for decoding: each skip is one line of the part's failed file
    (`key<TAB>reason<TAB>where`; the merge keeps key and reason), written at once so that
    dataloader workers (other processes) record theirs too."""

    def __init__(self, path: str):
        self.path = path
        Path(path).write_text("", encoding="utf-8")  # failures of an earlier run are retried

    def skip(self, reason: str, where: str, key, detail: str = "") -> None:
        log.warning(f"skip [{reason}] {where}" + (f" key={key}" if key is not None else "")
                    + (f": {detail}" if detail else ""))
        name = one_line(str(key) if key is not None else where)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{name}\t{reason}\t{one_line(where)}\n")

    def note(self, name: str) -> None:  # kept-but-noted samples do not occur in decode mode
        pass

    def counts(self) -> dict:
        return dict(Counter(line.split("\t")[1] for line in _lines(self.path)))

    def notes(self) -> dict:
        return {}

    def total(self) -> int:
        return len(_lines(self.path))


def one_line(text: str) -> str:
    return " ".join(str(text).split("\t")).replace("\n", " ").replace("\r", " ")


def _lines(path: str) -> list:
    if not os.path.exists(path):
        return []
    return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line]


def read_records(path: str) -> list:
    """The complete records of a jsonl result (a line cut by a killed run is dropped)."""
    out = []
    for line in _lines(path):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning(f"{path}: an incomplete line (a run was stopped mid-write) is dropped; it is decoded again")
    return out


def rewrite_results(path: str, records: list) -> None:
    """Write the records' result files (jsonl + scp) atomically."""
    jsonl = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    scp = "".join(f"{r['key']}\t{one_line(r['text'])}\n" for r in records)
    for target, text in ((path + ".jsonl", jsonl), (path, scp)):
        tmp = f"{target}.tmp{os.getpid()}"
        Path(tmp).write_text(text, encoding="utf-8")
        os.replace(tmp, target)


_WHERE = re.compile(r"^(.*?):(\d+)(?:\s|$)")


def _order(where: str):
    """Sort key of a failure: its list file and line when `where` starts with them."""
    m = _WHERE.match(where)
    return (m.group(1), int(m.group(2))) if m else (where, -1)


def merge(output: str, world_size: int) -> dict:
    """Join the parts of a `world_size`-process run and any earlier merged result, in list order;
    write OUT, OUT.jsonl, OUT.failed and the report. Returns the report."""
    parts = [Part.of(output, r, world_size) for r in range(world_size)]
    by_key, failed = {}, {}  # failed: (key, reason, where) -> sort key
    for record in read_records(output + ".jsonl") + [r for p in parts for r in read_records(p.jsonl)]:
        known = by_key.get(record["key"])
        if known is not None and known["pos"] != record["pos"]:  # the same key twice in the list
            failed[(record["key"], "duplicate_key", "")] = (_order(""), record["pos"])
        else:
            by_key[record["key"]] = record
    records = sorted(by_key.values(), key=lambda r: (r["pos"], r["key"]))
    for p in parts:
        for line in _lines(p.failed):
            key, reason, where = (line.split("\t") + ["", ""])[:3]
            if key not in by_key or reason == "duplicate_key":
                failed[(key, reason, where)] = (_order(where), [])
    rewrite_results(output, records)
    order = sorted(failed, key=lambda f: (failed[f], f))
    Path(output + ".failed").write_text("".join(f"{key}\t{reason}\n" for key, reason, _ in order),
                                        encoding="utf-8")
    report = build_report(records, dict(Counter(reason for _, reason, _ in failed)))
    write_report(report, output)
    return report


def print_summary(report: dict, output: str, file=sys.stdout) -> None:
    file.write(format_report(report))
    failed = sum(report["failed"].values())
    file.write(f"\nresult: {output} ({report['decoded']} decoded), {output}.jsonl, {output}.failed ({failed}), "
               f"{output}.report.json, {output}.report.txt\n")
    named = name_failures(output + ".failed")
    if named:
        file.write(named + "\n")


def main(argv=None) -> int:
    """python -m osum_echat.infer.results --output OUT --world_size N: merge the parts, report."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--output", required=True)
    ap.add_argument("--world_size", type=int, required=True)
    args = ap.parse_args(argv)
    print_summary(merge(args.output, args.world_size), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
