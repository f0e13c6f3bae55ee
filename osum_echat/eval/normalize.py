"""Text normalisation before scoring transcripts (both reference and hypothesis go through it).

Steps, in order:
  1. `<TAG>`s are removed (paralinguistic labels are scored on their own, see eval/report.py).
  2. Unicode NFKC: full-width letters, digits and punctuation become half-width ("ＡＢＣ１２" -> "ABC12").
  3. Lower case.
  4. CJK text only: every Arabic number becomes Chinese numerals, number by number, with
     cn2an.an2cn ("共100元" -> "共一百元"), as upstream converts both sides before its CER.
     Unlike upstream's regex, a "-" between numbers ("3-4") is not read as a minus sign.
  5. Punctuation (any Unicode category P* or S*) becomes a space; an apostrophe inside a word is kept
     ("don't").
  6. Tokens: CJK text is split into characters (each CJK character is one token; a Latin word inside
     CJK text is one token); space-delimited text into words.
A text is CJK when it holds a CJK ideograph, kana or hangul syllable: `is_cjk` decides per reference.
"""
from __future__ import annotations

import re
import unicodedata

import cn2an

TAG = re.compile(r"<[^<>]+>")
_CJK_CHAR = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK = re.compile(f"[{_CJK_CHAR}]")
_TOKEN = re.compile(f"[{_CJK_CHAR}]|[^\\s{_CJK_CHAR}]+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_INNER_APOSTROPHE = re.compile(r"(?<=\w)'(?=\w)")


def strip_tags(text: str) -> str:
    return TAG.sub(" ", text)


def tags_of(text: str) -> list[str]:
    """The `<TAG>`s of a text in order, upper-cased ("<male>" and "<MALE>" are one class)."""
    return [t.upper() for t in TAG.findall(text)]


def is_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


def _numbers_to_chinese(text: str) -> str:
    def convert(m: re.Match) -> str:
        try:
            return cn2an.an2cn(m.group())
        except ValueError:  # a number cn2an cannot read (too long): left as it is
            return m.group()
    return _NUMBER.sub(convert, text)


def _drop_punctuation(text: str) -> str:
    text = _INNER_APOSTROPHE.sub("\0", text)
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return text.replace("\0", "'")


def tokens(text: str, cjk: bool | None = None) -> list[str]:
    """Scoring tokens of `text` after the steps above; `cjk` None decides from the text itself."""
    text = unicodedata.normalize("NFKC", strip_tags(text)).lower()
    cjk = is_cjk(text) if cjk is None else cjk
    if cjk:
        text = _numbers_to_chinese(text)
    text = _drop_punctuation(text)
    return _TOKEN.findall(text) if cjk else text.split()


def normalize(text: str, cjk: bool | None = None) -> str:
    """The normalised text as space-separated tokens (what jiwer compares)."""
    return " ".join(tokens(text, cjk))
