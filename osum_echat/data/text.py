"""Text and label rules: target normalisation, tag handling, upstream's label fixes, tag-CoT think text."""
from __future__ import annotations

import re

from .. import labels
from .. import tasks as task_table

_CJK_SPACES = re.compile(r"\s*([\u4e00-\u9fff])\s*")
_LT_SPACES = re.compile(r"\s*<\s*")
_GT_SPACES = re.compile(r"\s*>\s*")
_FIRST_TAG = re.compile(r"<[^>]+>")
_LEADING_TAG = re.compile(r"^<([^<>]+)>(.*)$", re.S)


def normalize_text(text: str, lowercase: bool) -> str:
    """Upstream's target normalisation: no spaces around CJK chars or < >; lower-case ASR only."""
    text = _CJK_SPACES.sub(r"\1", text)
    if lowercase:
        text = text.lower()
    return _GT_SPACES.sub(">", _LT_SPACES.sub("<", text))


def first_tag(text: str):
    m = _FIRST_TAG.search(text)
    return m.group() if m else None


def answer_part(text: str):
    parts = text.strip().split("<开始回答>")
    return parts[1] if len(parts) == 2 else None


def split_leading_tag(text: str):
    """("<tag>", rest) when text starts with a <tag>, else (None, text)."""
    m = _LEADING_TAG.match(text)
    return (f"<{m.group(1)}>", m.group(2).lstrip()) if m else (None, text)


def _as_tag(value, default):
    if value is None:
        return default
    value = str(value)
    return value if value.startswith("<") or value.endswith(">") else f"<{value}>"


def tag_cot(txt: str, extra: dict, rng):
    """Tag-CoT think text built from the sample's paralinguistic labels
    (upstream processor_tag_think.py). Returns (think, txt); the caller checks a question exists."""
    question = extra.get("q_txt")
    if question is None:
        question = extra.get("question")
    unk = rng.random() < 0.85  # upstream: missing labels become "<&&>" (no loss) 85% of the time
    fill = (lambda d: task_table.NO_EOS_SUFFIX) if unk else (lambda d: d)
    emotion, _ = split_leading_tag(txt)
    if emotion not in labels.TAG_COT_EMOTIONS or emotion == labels.NEUTRAL_TAG:
        if emotion is not None:
            txt = txt.replace(emotion, labels.NEUTRAL_TAG)
        emotion = labels.NEUTRAL_TAG
    q_emotion = _as_tag(extra.get("q_emotion"), None) or fill("<NEUTRAL>")
    age = _as_tag(extra.get("age"), None) or fill("<ADULT>")
    gender = _as_tag(extra.get("gender"), None) or fill("<MALE>")
    caption = _as_tag(extra.get("caption"), None) or fill("<OTHER>")
    think = task_table.TAG_COT_TEMPLATE.format(question=question, age=age, gender=gender, q_emotion=q_emotion,
                                               caption=caption, emotion=emotion)
    return think, txt


def patch_text(txt, spec):
    """Upstream's label fixes: one line; coarse age classes; style names mapped to its classes."""
    txt = txt.replace("\n", " ")
    if "<AGE>" in spec.tag:
        for old, new in labels.AGE_MAP.items():
            txt = txt.replace(old, new)
    if "<STYLE>" in spec.tag:
        for old, new in labels.STYLE_MAP.items():
            txt = txt.replace(f"<{old}>", f"<{new}>")
    return txt


def target_text(txt, spec, extra, think_mode, rng):
    """Think wrapping and leading-tag handling of the two chain-of-thought styles."""
    if think_mode == "tag":
        if spec.tag_cot_keeps_emotion and split_leading_tag(txt)[0] is None:
            txt = labels.NEUTRAL_TAG + txt
        if spec.think:
            think, txt = tag_cot(txt, extra, rng)
            txt = f"{task_table.THINK_OPEN}{think}{task_table.THINK_CLOSE}{txt}"
        return txt
    # upstream quirk (processor.py, language-CoT): a leading "<tag>" is cut
    # from every target, whatever the task - "<HAPPY>" alone becomes "".
    _, txt = split_leading_tag(txt)
    if spec.think and "think_str" in extra:  # absent only when decoding (targets not required)
        txt = f"{task_table.THINK_OPEN}{extra['think_str']}{task_table.THINK_CLOSE}{txt}"
    return txt
