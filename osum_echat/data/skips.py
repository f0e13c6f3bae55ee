"""Counting and reporting skipped samples.

Bad input never stops a run: the stage that finds it calls
`counter.skip(reason, where, key, detail)`, which logs one warning naming the
list/tar, the key and the reason, and adds one to that reason's count.

Samples that are kept but handled in a way worth knowing about are counted
the same way with `counter.note(name)` (no log line; the caller logs once) and
read with `counter.notes()`; they are not skips.

Counts live in a small shared-memory table (one row per dataloader worker), so
`counter.counts()` in the main process sees the skips of every worker.
"""
from __future__ import annotations

import torch

from ..utils import get_logger

log = get_logger("osum_echat.data")

# Every reason a sample can be skipped for. Fixed so the shared table has a column per reason.
REASONS = (
    "missing_file",        # a list line / tar / audio path that does not exist
    "corrupt_tar",         # tar unreadable or truncated (the sample being read is lost)
    "bad_json",            # a jsonl line or .extra member that is not valid JSON
    "no_key",              # a jsonl line without "key"
    "no_metadata",         # combine: audio in the tar, no line for it in the jsonl
    "missing_audio",       # a speech-input task without audio
    "bad_audio",           # audio that cannot be decoded
    "empty_audio",         # zero samples / zero frames
    "nan_audio",           # NaN or Inf in the waveform
    "bad_history",         # history turns with gaps or unreadable audio
    "missing_field",       # a field the task needs (speech_token, think_str, question ...)
    "bad_speech_token",    # speech tokens that are not integers or out of range
    "other_assistant",     # target text names another assistant (filter word list)
    "no_target",           # the target text is empty/None after task conversion
    "mix_category",        # four-way mixing: sample belongs to another category
    "too_short",           # fewer frames than filter_conf.min_length
    "too_long",            # more frames than filter_conf.max_length
    "label_too_short",     # fewer label tokens than token_min_length
    "label_too_long",      # more label tokens than token_max_length
    "label_speech_ratio",  # text longer than 0.8 x speech tokens (upstream's check)
    "seq_too_long",        # estimated LLM sequence longer than max_seq_len
)
# Kept samples worth counting (not skips).
NOTES = (
    "unknown_task",        # a tag not in the task table, trained as speech -> text (upstream does so)
    "no_task",             # no task in the list entry, trained as <TRANSCRIBE> (filter_no_extra_info: true)
    "other_language",      # lang not in language_conf.limited_langs, trained all the same (as upstream)
)
_INDEX = {r: i for i, r in enumerate(REASONS + NOTES)}


def _row() -> int:
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else info.id + 1


class SkipCounter:
    """Per-reason skip counts shared between the main process and its workers."""

    def __init__(self, max_workers: int = 64):
        self.table = torch.zeros(max_workers + 1, len(REASONS) + len(NOTES), dtype=torch.int64).share_memory_()

    def skip(self, reason: str, where: str, key: str | None, detail: str = "") -> None:
        row = min(_row(), self.table.size(0) - 1)
        self.table[row, _INDEX[reason]] += 1
        msg = f"skip [{reason}] {where}"
        if key is not None:
            msg += f" key={key}"
        if detail:
            msg += f": {detail}"
        log.warning(msg)

    def note(self, name: str) -> None:
        row = min(_row(), self.table.size(0) - 1)
        self.table[row, _INDEX[name]] += 1

    def counts(self) -> dict:
        """Skips per reason (reasons never hit are left out)."""
        totals = self.table.sum(dim=0).tolist()
        return {r: int(n) for r, n in zip(REASONS, totals) if n}

    def notes(self) -> dict:
        """Kept-but-noted samples per name (see NOTES)."""
        totals = self.table[:, len(REASONS):].sum(dim=0).tolist()
        return {r: int(n) for r, n in zip(NOTES, totals) if n}

    def total(self) -> int:
        """Skipped samples (notes not included)."""
        return int(self.table[:, :len(REASONS)].sum())

    def reset(self) -> None:
        self.table.zero_()
