"""Score decoded utterances (the OUT.jsonl that inference writes) against their references.

  python -m osum_echat.eval.report exp/infer/text.jsonl
prints one JSON line: utterances, WER (CJK characters count as words), tag accuracy, per task.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict

from osum_echat.eval.metrics import tag_accuracy, word_error_rate


def score(records: list[dict]) -> dict:
    with_ref = [r for r in records if r.get("ref")]
    summary: dict = {"utterances": len(records)}
    if not with_ref:
        return summary
    wer = word_error_rate([r["ref"] for r in with_ref], [r["text"] for r in with_ref])
    summary.update(wer=round(wer.rate, 4), wer_errors=wer.errors, wer_words=wer.total,
                   tag_accuracy=round(tag_accuracy([r["ref"] for r in with_ref], [r["text"] for r in with_ref]), 4))
    by_task = defaultdict(list)
    for r in with_ref:
        by_task[r.get("task", "?")].append(r)
    summary["per_task"] = {task: round(word_error_rate([r["ref"] for r in rs], [r["text"] for r in rs]).rate, 4)
                           for task, rs in sorted(by_task.items())}
    return summary


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m osum_echat.eval.report RESULTS.jsonl", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    print(json.dumps(score(records), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
