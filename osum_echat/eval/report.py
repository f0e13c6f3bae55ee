"""Score decoded utterances per task family and write the report.

  python -m osum_echat.eval.report OUT.jsonl [--failed OUT.failed]   # writes OUT.report.json / .txt

What is scored comes from the task table (osum_echat/tasks.py), not from a list of task names:
  understanding rows (output_type "text"): the `<TRANSCRIBE>` part of the tag scores the
    transcript (tags removed, eval/normalize.py): WER for space-delimited references, CER for CJK
    ones; every paralinguistic part of the tag (SLOT_OF_PART) is one slot scored on its own:
    accuracy, recall per class, confusion table. The reference's trailing `<TAG>`s fill the slots
    in the order the tag names them; a hypothesis tag counts for a slot when it is one of the
    classes the references of that slot use (so the order of the hypothesis tags does not matter).
  every other row: a generation family named after the row's input -> output kind
    (`mix_category`) plus "_think" for think rows. No WER (a reply has no single right wording):
    counts, answer length, think present, speech tokens, speech seconds per text character
    (speech tokens / 25 per second over the characters of the answer, or of the input text for TTS)
    and, when audio was rendered, its duration.
A metric with nothing to score is "n/a" (None in the JSON), never 0.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from .. import tasks as task_table
from .metrics import ErrorRate, SlotScore, error_rate, pick_class, summary_stats
from .normalize import is_cjk, strip_tags, tags_of

SLOT_OF_PART = {"<EMOTION>": "emotion", "<GENDER>": "gender", "<AGE>": "age", "<STYLE>": "style",
                "<CAPTION>": "caption"}
TRANSCRIPT_PART = "<TRANSCRIBE>"
UNDERSTANDING_OUTPUT = "text"  # output_type of the speech -> text understanding rows
ANSWER_MARK = "<开始回答>"  # "<TRANSCRIBE> <S2TCHAT>" targets: transcript, this mark, then the reply
FAMILY_OF_CATEGORY = {"s2t": "s2t_chat", "t2t": "t2t_chat", "t2s": "tts", "s2s": "s2s"}
SPEECH_TOKENS_PER_SECOND = 25  # CosyVoice-300M-25Hz tokens


@dataclass(frozen=True)
class Plan:
    transcript: bool = False
    slots: tuple = ()
    family: str | None = None  # generation family, None for understanding rows


def _spec(tag: str):
    return task_table.get_task(tag) or task_table.generic_understanding(tag)


def plan_for(tag: str) -> Plan:
    spec = _spec(tag)
    if spec.output_type == UNDERSTANDING_OUTPUT:
        parts = spec.tag.split()
        return Plan(TRANSCRIPT_PART in parts, tuple(SLOT_OF_PART[p] for p in parts if p in SLOT_OF_PART))
    return Plan(family=FAMILY_OF_CATEGORY[spec.mix_category] + ("_think" if spec.think else ""))


def _transcript(text: str) -> str:
    return strip_tags(text.split(ANSWER_MARK)[0])


def _ref_slots(reference: str, slots: tuple):
    """{slot: class} from the reference's trailing tags, or None when it has too few."""
    found = tags_of(reference)
    if len(found) < len(slots):
        return None
    return dict(zip(slots, found[len(found) - len(slots):]))


def score_transcripts(rows: list) -> dict:
    groups = {"wer": [], "cer": []}
    for r in rows:
        groups["cer" if is_cjk(_transcript(r["reference"])) else "wer"].append(r)
    out = {}
    for name, rs in groups.items():
        er = error_rate([_transcript(r["reference"]) for r in rs], [_transcript(r["text"]) for r in rs]) \
            if rs else ErrorRate()
        out[name] = er.as_dict(name)
    out["no_reference"] = len(rows) - out["wer"]["count"] - out["cer"]["count"]
    return out


def score_slots(rows: list) -> dict:
    refs = []  # (row, {slot: class}) of the rows whose reference fills their slots
    classes = defaultdict(set)
    unaligned = Counter()
    for r in rows:
        slots = plan_for(r["task"]).slots
        ref = _ref_slots(r["reference"], slots)
        if ref is None:
            unaligned.update(slots)
            continue
        refs.append((r, ref))
        for slot, cls in ref.items():
            classes[slot].add(cls)
    scores = defaultdict(SlotScore)
    for r, ref in refs:
        hyp_tags, used = tags_of(r["text"]), set()
        for slot, cls in ref.items():
            scores[slot].add(cls, pick_class(hyp_tags, classes[slot], used))
    names = sorted(set(scores) | set(unaligned))
    return {s: {**(scores[s].as_dict() if s in scores else SlotScore().as_dict()),
                "no_reference_tag": unaligned[s]} for s in names}


def score_generation(rows: list, family: str) -> dict:
    out = {"count": len(rows)}
    texts = [r for r in rows if _spec(r["task"]).text_target]  # rows that answer in text
    if texts:
        out["empty_answers"] = sum(not r["text"].strip() for r in texts)
        out["answer_chars"] = {**summary_stats([len(r["text"].strip()) for r in texts]), "count": len(texts)}
    thinks = [r for r in rows if _spec(r["task"]).think]
    if thinks:
        present = sum(bool((r.get("think") or "").strip()) for r in thinks)
        out["think_present"] = {"share": round(present / len(thinks), 4), "present": present, "count": len(thinks)}
    speech = [r for r in rows if _spec(r["task"]).speech_output]
    if speech:
        out["speech_tokens"] = {**summary_stats([len(r["speech_tokens"]) for r in speech]), "count": len(speech)}
        out["empty_speech"] = sum(not r["speech_tokens"] for r in speech)
        ratio = [len(r["speech_tokens"]) / SPEECH_TOKENS_PER_SECOND / len(_spoken_text(r))
                 for r in speech if _spoken_text(r)]
        out["speech_seconds_per_text_char"] = {**summary_stats(ratio), "count": len(ratio)}
        secs = [r["wav_seconds"] for r in speech if r.get("wav_seconds") is not None]
        out["wav_seconds"] = {**summary_stats(secs), "count": len(secs)}
    return out


def _spoken_text(record) -> str:
    """The text the speech says: the answer, or for text -> speech rows the input text."""
    if not _spec(record["task"]).text_target:
        return strip_tags(record.get("reference") or "").strip()
    return record["text"].strip()


def build_report(records: list, failed: dict | None = None) -> dict:
    """The report of one run: counts, then metrics per family, each with the count it scored."""
    failed = dict(sorted((failed or {}).items()))
    understanding, families = [], defaultdict(list)
    for r in records:
        plan = plan_for(r["task"])
        if plan.family is None:
            understanding.append(r)
        else:
            families[plan.family].append(r)
    metrics = {}
    transcripts = [r for r in understanding if plan_for(r["task"]).transcript]
    if transcripts:
        metrics["transcription"] = score_transcripts(transcripts)
    slotted = [r for r in understanding if plan_for(r["task"]).slots]
    if slotted:
        metrics["paralinguistic"] = score_slots(slotted)
    for family, rows in sorted(families.items()):
        metrics[family] = score_generation(rows, family)
    return {
        "listed": len(records) + sum(failed.values()),
        "decoded": len(records),
        "failed": failed,
        "hit_max_text_tokens": sum(bool(r.get("hit_max_text_tokens")) for r in records),
        "hit_max_speech_tokens": sum(bool(r.get("hit_max_speech_tokens")) for r in records),
        "tasks": dict(sorted(Counter(r["task"] for r in records).items())),
        "metrics": metrics,
    }


# ------------------------------------------------------------------ readable table

def _fmt(x) -> str:
    if x is None:
        return "n/a"
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def format_report(report: dict) -> str:
    failed = ", ".join(f"{k} {v}" for k, v in report["failed"].items()) or "none"
    lines = [f"listed {report['listed']}  decoded {report['decoded']}  failed {sum(report['failed'].values())}"
             f" ({failed})",
             f"hit max_text_tokens {report['hit_max_text_tokens']}  "
             f"hit max_speech_tokens {report['hit_max_speech_tokens']}", ""]
    rows = [("family", "metric", "value", "count")]
    for family, m in report["metrics"].items():
        if family == "transcription":
            for name in ("wer", "cer"):
                rows.append((family, name, _fmt(m[name][name]), str(m[name]["count"])))
        elif family == "paralinguistic":
            for slot, s in m.items():
                rows.append((family, f"{slot} accuracy", _fmt(s["accuracy"]), str(s["count"])))
                for cls, rec in s["recall"].items():
                    rows.append((family, f"{slot} recall {cls}", _fmt(rec), str(sum(s["confusion"][cls].values()))))
        else:
            for name, v in m.items():
                if isinstance(v, dict):  # summary stats (mean shown) or a share
                    value = v.get("mean", v.get("share"))
                    rows.append((family, name + (" (mean)" if "mean" in v else ""), _fmt(value),
                                 str(v.get("count", m["count"]))))
                elif name != "count":
                    rows.append((family, name, _fmt(v), str(m["count"])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    for slot, s in (report["metrics"].get("paralinguistic") or {}).items():
        lines += ["", f"confusion {slot} (rows: reference, columns: hypothesis)"]
        cols = sorted({c for row in s["confusion"].values() for c in row})
        table = [[""] + cols] + [[ref] + [str(row.get(c, 0)) for c in cols] for ref, row in s["confusion"].items()]
        w = [max(len(t[i]) for t in table) for i in range(len(cols) + 1)]
        lines += ["  ".join(c.ljust(x) for c, x in zip(t, w)).rstrip() for t in table]
    return "\n".join(lines) + "\n"


def read_failed(path) -> dict:
    """reason -> count from an OUT.failed file (key<TAB>reason lines)."""
    counts = Counter()
    if path and Path(path).exists():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if "\t" in line:
                counts[line.split("\t")[1]] += 1
    return dict(counts)


def write_report(report: dict, output: str) -> None:
    Path(f"{output}.report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n",
                                             encoding="utf-8")
    Path(f"{output}.report.txt").write_text(format_report(report), encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="score an OUT.jsonl written by batch inference")
    ap.add_argument("results", help="OUT.jsonl")
    ap.add_argument("--failed", default=None, help="OUT.failed (default: beside the results)")
    args = ap.parse_args(argv)
    output = args.results[:-len(".jsonl")] if args.results.endswith(".jsonl") else args.results
    with open(args.results, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    report = build_report(records, read_failed(args.failed or f"{output}.failed"))
    write_report(report, output)
    sys.stdout.write(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
