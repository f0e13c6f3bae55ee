"""echat: this project's EChat-eval-style suite, in the repo's own data format (raw jsonl or shards).

Each utterance is a data-list sample as training reads it (key, wav, txt, task, extra); what the
suite reads from it:
  extra.question (or q_txt)      what the user said
  extra.emotion / age / gender / event (or sound_event, caption)   the query's paralinguistic labels
  extra.reply_emotion            optional: the emotion the reply should be spoken in (scored
                                 against the emotion heard in the reply audio)
  extra.dimension                the dimension the item tests: emotion | age | gender | event | multi
                                 (default: the one label given, "multi" when several are)
  task                           the task to decode with (default <S2TCHAT> <TEXT2TOKEN> <THINK>)
The list is decoded as it is (raw or shard, see osum_echat/data/sources.py). Replies are judged with
rubrics/echat.txt (1-5 per dimension) from the transcript, the labels, the reply text and the
emotion heard in the reply audio; the think chain's tags are scored against the labels.
"""
from __future__ import annotations

import os

from osum_echat.data.sources import read_entries, read_entry

from . import SPOKEN_REPLY_TASK, Item, Suite, SuiteFormatError, register

SLOT_FIELDS = {"emotion": ("emotion", "q_emotion"), "age": ("age",), "gender": ("gender",),
               "event": ("event", "sound_event", "caption")}
DIMENSIONS = (*SLOT_FIELDS, "multi")


class _Skips:
    """Broken list lines: one line each on stderr, counted; decoding counts them again in its report."""

    def __init__(self):
        self.count = 0

    def skip(self, reason, where, key, detail=""):
        self.count += 1

    def note(self, name):
        pass


def as_tag(label) -> str:
    label = str(label).strip()
    return label.upper() if label.startswith("<") else f"<{label.upper()}>"


def list_type(path: str) -> str:
    """raw when the list's first line is a JSON object, else shard (tar paths)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                return "raw" if line.lstrip().startswith("{") else "shard"
    raise SuiteFormatError(f"echat: {path} is empty")


class EChat(Suite):
    name = "echat"
    description = "EChat-eval style: emotion / age / gender / event / multi (judge 1-5), think tags"

    def read(self, path: str, audio_root: str | None) -> list:
        if not os.path.isfile(path):
            raise SuiteFormatError(f"echat: data list {path} not found")
        self.data_type = list_type(path)
        items, skips = [], _Skips()
        for entry in read_entries(path, self.data_type, audio_root):
            for sample in read_entry(entry, skips, audio_root):
                items.append(self._item(sample))
        if not items:
            raise SuiteFormatError(f"echat: no readable utterance in {path} ({skips.count} broken lines)")
        return items

    def _item(self, sample: dict) -> Item:
        extra = sample.get("extra") or {}
        labels = {}
        for slot, names in SLOT_FIELDS.items():
            value = next((extra.get(n) or sample.get(n) for n in names if extra.get(n) or sample.get(n)), None)
            if value:
                labels[slot] = as_tag(value)
        dimension = str(extra.get("dimension") or (next(iter(labels)) if len(labels) == 1 else "multi"))
        if dimension not in DIMENSIONS:
            raise SuiteFormatError(f"echat: {sample.get('src')} key {sample.get('key')}: dimension {dimension!r} "
                                   f"is not one of {', '.join(DIMENSIONS)}")
        audio = sample.get("audio")
        return Item(key=str(sample["key"]), wav=audio if isinstance(audio, str) else None,
                    task=sample.get("task") or SPOKEN_REPLY_TASK,
                    statement=str(extra.get("question") or extra.get("q_txt") or ""),
                    dimension=dimension, labels=labels, rubrics=("echat",),
                    fields={"expected_reply_emotion": as_tag(extra["reply_emotion"])} if extra.get("reply_emotion") else {})

    def decode_list(self, path: str):
        """(data_type, list) batch inference decodes: the suite's own list, as it is."""
        return list_type(path), path


register(EChat())
