"""VStyle (arXiv 2509.09716): voice style adaptation from spoken instructions, one jsonl line per item.

Fields read (the release's jsonl; names it spells differently are accepted as listed):
  key | id              item id
  wav | wav_path | audio  the spoken instruction (relative to --audio_root, default the file's folder)
  instruction | text     the instruction's text
  category | task       acoustic attributes, natural-language instruction, role play, implicit empathy
  language | lang       optional
Replies are judged with rubrics/vstyle.txt ("Final score: [[N]]", 1-5) per category.
"""
from __future__ import annotations

from . import SPOKEN_REPLY_TASK, Item, Suite, SuiteFormatError, audio_path, load_jsonl, register


def _first(row: dict, names: tuple, where: str, required: bool = True):
    for n in names:
        if n in row and row[n] not in (None, ""):
            return row[n]
    if required:
        raise SuiteFormatError(f"{where}: no field {' / '.join(repr(n) for n in names)}")
    return ""


class VStyle(Suite):
    name = "vstyle"
    description = "VStyle: voice style adaptation (judge 1-5)"

    def read(self, path: str, audio_root: str | None) -> list:
        items = []
        for i, row in enumerate(load_jsonl(path, "vstyle"), 1):
            where = f"vstyle: {path}:{i}"
            if not isinstance(row, dict):
                raise SuiteFormatError(f"{where}: a line must be a JSON object")
            category = str(_first(row, ("category", "task"), where))
            instruction = str(_first(row, ("instruction", "text"), where))
            items.append(Item(
                key=str(_first(row, ("key", "id"), where)),
                wav=audio_path(str(_first(row, ("wav", "wav_path", "audio"), where)), audio_root, path),
                task=SPOKEN_REPLY_TASK, statement=instruction, dimension=category, rubrics=("vstyle",),
                fields={"instruction": instruction, "category": category,
                        "language": _first(row, ("language", "lang"), where, required=False)}))
        return items


register(VStyle())
