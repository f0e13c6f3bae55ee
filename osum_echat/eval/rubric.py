"""Judge rubrics: prompt files in osum_echat/eval/rubrics/NAME.txt.

File layout:
    # rubric: one line saying what it judges
    # source: where the criteria and score format come from (more "#" lines may follow)
    # score DIMENSION: REGEX        one line per score the answer carries; group 1 is the number
    # range: LOW HIGH               a parsed number outside it is invalid
    [system]                        optional system message
    ...
    [user]                          the user message
    ... ${field} ...                fields filled from the item (string.Template: `$` + name)

`Rubric.parse` gives {dimension: score or None}: None (counted `invalid` in the report) when the
answer has no number in the expected format or the number is out of range, never a made-up 0.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

RUBRIC_DIR = Path(__file__).resolve().parent / "rubrics"
_HEADER = re.compile(r"^#\s*(\w+)(?:\s+([\w-]+))?\s*:\s*(.*)$")


class RubricError(ValueError):
    pass


@dataclass(frozen=True)
class Rubric:
    name: str
    title: str
    source: str
    system: str
    user: str
    scores: tuple  # ((dimension, compiled regex), ...)
    low: float
    high: float

    @property
    def dimensions(self) -> tuple:
        return tuple(d for d, _ in self.scores)

    def messages(self, fields: dict) -> list:
        def fill(text: str) -> str:
            try:
                return string.Template(text).substitute({k: "" if v is None else str(v) for k, v in fields.items()})
            except KeyError as e:
                raise RubricError(f"rubric {self.name}: the item has no field {e} its prompt needs") from None
        out = [{"role": "system", "content": fill(self.system)}] if self.system else []
        return out + [{"role": "user", "content": fill(self.user)}]

    def parse(self, answer: str) -> dict:
        out = {}
        for dim, pattern in self.scores:
            m = pattern.search(answer or "")
            value = float(m.group(1)) if m else None
            out[dim] = value if value is not None and self.low <= value <= self.high else None
        return out


def parse_rubric(name: str, text: str) -> Rubric:
    meta, scores, sources, sections, current = {}, [], [], {"system": [], "user": []}, None
    for line in text.splitlines():
        if current is None and line.startswith("#"):
            m = _HEADER.match(line)
            if m and m.group(1) == "score":
                scores.append((m.group(2), re.compile(m.group(3).strip())))
            elif m and m.group(1) in ("rubric", "range", "source"):
                meta[m.group(1)] = m.group(3).strip()
                if m.group(1) == "source":
                    sources.append(m.group(3).strip())
            elif sources:
                sources.append(line.lstrip("#").strip())
            continue
        if line.strip() in ("[system]", "[user]"):
            current = line.strip()[1:-1]
            continue
        if current is not None:
            sections[current].append(line)
    if not scores or not sections["user"] or "range" not in meta:
        raise RubricError(f"rubric {name}: needs '# score DIM: REGEX', '# range: LOW HIGH' and a [user] part")
    low, high = (float(x) for x in meta["range"].split())
    return Rubric(name, meta.get("rubric", name), " ".join(sources), "\n".join(sections["system"]).strip(),
                  "\n".join(sections["user"]).strip(), tuple(scores), low, high)


@lru_cache(maxsize=None)
def load_rubric(name: str) -> Rubric:
    path = RUBRIC_DIR / f"{name}.txt"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RUBRIC_DIR.glob("*.txt")))
        raise RubricError(f"no rubric {path} (known: {known})")
    return parse_rubric(name, path.read_text(encoding="utf-8"))
