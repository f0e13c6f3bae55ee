"""Data sources: list files -> entries -> sample dicts.

Three formats (see common_utils/README.md for examples):

raw      a jsonl list, one utterance a line: key, wav, txt, task, extra (dict
         or JSON string), optional start/end (seconds), optional history
         (list of {"wav": path, "txt": str}). One entry = one line.
shard    a list of WeNet-style tars; per key the members KEY.wav (or another
         audio suffix), KEY.txt, KEY.task, KEY.extra (json), KEY.wav_N /
         KEY.txt_N (history turn N, 1-based) and any other suffix kept as a
         string field. One entry = one tar.
combine  combines_list.txt (jsonl metadata lists) + combines_tar_root.txt
         (folder of audio-only tars); the tar of a list is
         <tar_root>/<list stem>.tar. One entry = one (jsonl, tar) pair.
         Lines "META|TAR" (and "-|TAR" for a plain shard), as written by
         upstream's data-yaml tool, are read too, and so are raw jsonl lines
         (a list mixing the formats, as osum_echat/train/data_lists.py writes;
         relative wav paths there follow the rule below).

Relative paths (list lines, wav paths, tar root) resolve against `root` when
the user gives one; otherwise against the folder of the file that names them,
and if nothing exists there, against the working directory.

A sample dict carries: key, txt, task, extra, history, audio (a path or the
bytes of the audio member, decoded later only if the task needs audio),
optional start/end, src (the list/tar it came from, for messages) and any
other field of the input.
"""
from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..utils import get_logger
from .features import AUDIO_SUFFIXES

log = get_logger("osum_echat.data")


@dataclass(frozen=True)
class Entry:
    """One unit of work: a raw jsonl line, a shard tar, or a combine (jsonl, tar) pair."""
    kind: str          # "raw" | "shard" | "combine" | "bad" (an undecodable list line, counted when read)
    value: str         # the json line, or the tar path
    meta: str = ""     # combine: the jsonl metadata path
    base: str = ""     # folder relative paths resolve against (unless a root is given)
    where: str = ""    # "list:line" for messages


def resolve(path: str, root: str | None, base: str) -> str:
    """The documented rule: absolute as is; else root/path; else base/path if it exists; else cwd."""
    path = os.path.expanduser(str(path))
    if os.path.isabs(path):
        return path
    if root:
        return os.path.join(root, path)
    if base:
        candidate = os.path.join(base, path)
        if os.path.exists(candidate):
            return candidate
    return path


def _lines(path: str, bad: list | None = None) -> list:
    """(line number, stripped text) of the non-empty lines, each decoded as UTF-8 on its own.

    A line that is not valid UTF-8 is left out; its (line number, message) goes
    to `bad` when given (the caller counts it), else it is logged here."""
    with open(path, "rb") as f:
        data = f.read()
    out = []
    for i, raw in enumerate(data.splitlines()):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            msg = f"line is not valid UTF-8: {e}"
            if bad is not None:
                bad.append((i + 1, msg))
            else:
                log.warning(f"{path}:{i + 1}: {msg}; line ignored")
            continue
        if line:
            out.append((i + 1, line))
    return out


def _bad_entries(list_path: str, bad: list) -> list:
    """Entries that only count an undecodable list line as skipped when read."""
    return [Entry("bad", msg, where=f"{list_path}:{n}") for n, msg in bad]


def is_combine_list(path: str) -> bool:
    return Path(path).name == "combines_list.txt"


def read_entries(list_path: str, data_type: str, root: str | None = None) -> list:
    """All entries named by one list file. Raises FileNotFoundError for a missing list."""
    list_path = str(list_path)
    base = os.path.dirname(os.path.abspath(list_path))
    if data_type == "shard" and is_combine_list(list_path):
        data_type = "combine"  # upstream reads a combines_list.txt given as shard the same way
    bad = []
    if data_type == "raw":
        out = [Entry("raw", line, base=base, where=f"{list_path}:{n}") for n, line in _lines(list_path, bad)]
        return out + _bad_entries(list_path, bad)
    if data_type == "combine":
        if not is_combine_list(list_path):
            return _pipe_entries(list_path, base, root)
        tar_root_file = os.path.join(os.path.dirname(list_path), "combines_tar_root.txt")
        if not os.path.exists(tar_root_file):
            raise FileNotFoundError(f"{list_path}: combine list needs {tar_root_file} (one line: the tar folder)")
        root_lines = _lines(tar_root_file)
        if not root_lines:
            raise ValueError(f"{tar_root_file}: needs one line, the tar folder")
        tar_root = resolve(root_lines[0][1].rstrip("/"), root, base)
        out = []
        for n, line in _lines(list_path, bad):
            meta = resolve(line, root, base)
            tar = os.path.join(tar_root, Path(line).stem + ".tar")
            out.append(Entry("combine", tar, meta=meta, base=base, where=f"{list_path}:{n}"))
        return out + _bad_entries(list_path, bad)
    if data_type == "shard":
        return _pipe_entries(list_path, base, root)
    raise ValueError(f"data_type must be raw, shard or combine, got {data_type!r}")


def _pipe_entries(list_path: str, base: str, root: str | None) -> list:
    out, bad = [], []
    for n, line in _lines(list_path, bad):
        where = f"{list_path}:{n}"
        if line.startswith("{"):  # a raw jsonl line in a mixed list (data yaml output)
            out.append(Entry("raw", line, base=base, where=where))
        elif "|" in line:
            meta, tar = line.split("|", 1)
            tar = resolve(tar, root, base)
            if meta.strip() == "-":
                out.append(Entry("shard", tar, base=base, where=where))
            else:
                out.append(Entry("combine", tar, meta=resolve(meta, root, base), base=base, where=where))
        else:
            out.append(Entry("shard", resolve(line, root, base), base=base, where=where))
    return out + _bad_entries(list_path, bad)


# --------------------------------------------------------------------------- reading entries

def read_entry(entry: Entry, counter, root: str | None = None):
    """Yield the sample dicts of one entry; anything broken is skipped and counted."""
    if entry.kind == "bad":
        counter.skip("bad_json", entry.where, None, entry.value)
    elif entry.kind == "raw":
        sample = parse_raw_line(entry, counter, root)
        if sample is not None:
            yield sample
    elif entry.kind == "shard":
        yield from read_shard(entry, counter, root)
    else:
        yield from read_combine(entry, counter, root)


def parse_raw_line(entry: Entry, counter, root):
    try:
        obj = json.loads(entry.value)
    except json.JSONDecodeError as e:
        counter.skip("bad_json", entry.where, None, str(e))
        return None
    if not isinstance(obj, dict) or "key" not in obj:
        counter.skip("no_key", entry.where, None, "a raw list line needs a \"key\" field")
        return None
    sample = dict(obj)
    sample["src"] = entry.where
    wav = sample.pop("wav", None)
    sample["audio"] = resolve(wav, root, entry.base) if wav else None
    history = sample.get("history") or []
    if history:
        if not isinstance(history, list) or not all(
                isinstance(t, dict) and isinstance(t.get("txt", ""), str) for t in history):
            counter.skip("bad_history", entry.where, obj["key"], "history must be a list of {wav, txt: str}")
            return None
        sample["history"] = [
            {"audio": resolve(t["wav"], root, entry.base) if t.get("wav") else None, "txt": t.get("txt", "")}
            for t in history]
    return sample


def _split_name(name: str):
    pos = name.rfind(".")
    return (name[:pos], name[pos + 1:]) if pos > 0 else (name, "")


def tar_groups(tar_path: str, where: str, counter):
    """Yield (key, {suffix: bytes}) for consecutive members sharing a key, streaming."""
    if not os.path.exists(tar_path):
        counter.skip("missing_file", where, None, f"tar {tar_path} does not exist")
        return
    key, members = None, {}
    try:
        with open(tar_path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                prefix, suffix = _split_name(info.name)
                if key is not None and prefix != key:
                    yield key, members
                    members = {}
                key = prefix
                members[suffix] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        counter.skip("corrupt_tar", tar_path, key, f"{type(e).__name__}: {e}; samples before it were kept")
        return
    if key is not None:
        yield key, members


def _history_from_members(members: dict):
    """Turns from KEY.wav_N / KEY.txt_N members; None when turns have gaps.

    Raises UnicodeDecodeError for a txt_N member that is not UTF-8 (callers skip the sample)."""
    turns = {}
    for suffix, data in members.items():
        kind, _, num = suffix.partition("_")
        if num.isdigit() and kind in ("wav", "txt"):
            turn = turns.setdefault(int(num), {"audio": None, "txt": ""})
            if kind == "wav":
                turn["audio"] = data
            else:
                turn["txt"] = data.decode("utf-8").strip()
    if not turns:
        return []
    if sorted(turns) != list(range(1, len(turns) + 1)):
        return None
    return [turns[i] for i in sorted(turns)]


def _is_history_suffix(suffix: str) -> bool:
    kind, _, num = suffix.partition("_")
    return num.isdigit() and kind in ("wav", "txt")


def read_shard(entry: Entry, counter, root):
    tar_path = entry.value
    for key, members in tar_groups(tar_path, entry.where, counter):
        sample = {"key": key, "src": tar_path, "txt": "", "audio": None}
        try:
            for suffix, data in members.items():
                if suffix in AUDIO_SUFFIXES:
                    sample["audio"] = data
                elif suffix == "extra":
                    sample["extra"] = json.loads(data.decode("utf-8"))
                elif not _is_history_suffix(suffix):
                    sample[suffix] = data.decode("utf-8").strip()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            counter.skip("bad_json", tar_path, key, f"member not valid utf-8/JSON: {e}")
            continue
        try:
            history = _history_from_members(members)
        except UnicodeDecodeError as e:
            counter.skip("bad_history", tar_path, key, f"a txt_N member is not valid UTF-8: {e}")
            continue
        if history is None:
            counter.skip("bad_history", tar_path, key, "history members wav_N/txt_N have gaps")
            continue
        sample["history"] = history
        yield sample


_warned_tas_tag = False


def _meta_table(meta_path: str, counter) -> dict | None:
    if not os.path.exists(meta_path):
        counter.skip("missing_file", meta_path, None, "combine metadata list does not exist")
        return None
    table, bad = {}, []
    lines = _lines(meta_path, bad)
    for n, msg in bad:
        counter.skip("bad_json", f"{meta_path}:{n}", None, msg)
    for n, line in lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            counter.skip("bad_json", f"{meta_path}:{n}", None, str(e))
            continue
        if not isinstance(obj, dict) or "key" not in obj:
            counter.skip("no_key", f"{meta_path}:{n}", None, "a metadata line needs a \"key\" field")
            continue
        key = obj["key"]
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            counter.skip("no_key", f"{meta_path}:{n}", None, f"\"key\" must be a string, got {key!r}")
            continue
        table[str(key)] = obj  # tar member names are strings: an int key 7 names 7.wav
    return table


def _from_meta(obj: dict, src: str) -> dict:
    global _warned_tas_tag
    sample = {k: v for k, v in obj.items() if k != "wav"}
    if "task" not in sample and "tas_tag" in sample:
        # the published combine sample spells the task field "tas_tag"
        sample["task"] = sample.pop("tas_tag")
        if not _warned_tas_tag:
            log.warning(f"{src}: field 'tas_tag' read as 'task' (accepted alias; please rename it)")
            _warned_tas_tag = True
    sample["src"] = src
    sample["audio"] = None
    sample.setdefault("txt", "")
    return sample


def read_combine(entry: Entry, counter, root):
    table = _meta_table(entry.meta, counter)
    if table is None:
        return
    seen = set()
    for key, members in tar_groups(entry.value, entry.where, counter):
        audio = next((members[s] for s in members if s in AUDIO_SUFFIXES), None)
        if audio is None:
            continue  # metadata members of a full shard used as a combine tar
        if key not in table:
            counter.skip("no_metadata", entry.value, key, f"no line for it in {entry.meta}")
            continue
        seen.add(key)
        sample = _from_meta(table[key], entry.meta)
        sample["audio"] = audio
        try:
            history = _history_from_members(members)
        except UnicodeDecodeError as e:
            counter.skip("bad_history", entry.value, key, f"a txt_N member is not valid UTF-8: {e}")
            continue
        if history is None:
            counter.skip("bad_history", entry.value, key, "history members wav_N/txt_N have gaps")
            continue
        if history:
            meta_history = sample.get("history") or []
            if not isinstance(meta_history, list) or not all(
                    isinstance(t, dict) and isinstance(t.get("txt", ""), str) for t in meta_history):
                counter.skip("bad_history", entry.meta, key, "metadata history must be a list of {txt: str}")
                continue
            texts = [t.get("txt", "") for t in meta_history]
            for i, turn in enumerate(history):
                if not turn["txt"] and i < len(texts):
                    turn["txt"] = texts[i]
        sample["history"] = history
        yield sample
    # metadata without audio: fine for text-only tasks, the tokenizer stage skips the rest
    for key, obj in table.items():
        if key not in seen:
            sample = _from_meta(obj, entry.meta)
            sample["history"] = []
            yield sample
