"""Fill extra.speech_token of a data list with the 25 Hz CosyVoice speech tokenizer.

    python -m osum_echat.bin.extract_speech_tokens --model_dir DIR --data_type raw|shard \
        --data LIST --output OUT [--root R] [--batch_size 16] [--audio_field wav|extra.NAME]

DIR holds speech_tokenizer_v1.onnx (a CosyVoice-300M-25Hz directory). Every
utterance's audio is resampled to 16 kHz, turned into whisper 128-bin log-mel and
tokenized (padded batches with per-item lengths; the first batch is checked
against one-by-one runs, and batching is switched off if they differ). The data
comes back in the same format, in OUT:

raw    OUT/<LIST name>: the jsonl lines with extra.speech_token filled (all other
       fields as they were; relative wav paths rewritten absolute, since the list moved).
shard  OUT/<tar name> per input tar (members unchanged, KEY.extra updated or
       added) with a <tar>.finished marker, and OUT/<LIST name> listing them.

Resumable: a rerun skips keys already written (raw: lines of the output list;
shard: tars with their .finished marker). A sample whose audio is missing,
unreadable, empty, non-finite or over 30 s (the tokenizer's limit) is left out,
counted and logged with its list file:line and key; all of them are listed in
OUT/skipped.tsv. Samples without audio (text-only tasks) are copied unchanged.
The last stdout line is a JSON summary.

Under torchrun (several processes or machines; OUT on a filesystem they all see) each rank takes
every WORLD_SIZE-th list entry (raw: line, shard: tar) and rank 0 merges the output list, in list
order, and skipped.tsv once every rank is done (osum_echat/token2wav/extract_parts.py):
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 4 --master_addr HOST --master_port 29500 \
        -m osum_echat.bin.extract_speech_tokens --model_dir DIR --data_type raw --data LIST --output OUT

--audio_field extra.NAME takes the audio path from extra[NAME] instead of "wav"
(upstream's S2S lists keep the answer audio in extra.a_wav_path).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common_utils.convert import _add
from osum_echat.data.features import AUDIO_SUFFIXES, decode_audio, resample
from osum_echat.data.sources import read_entries, resolve, tar_groups
from osum_echat.job_ranks import JobRanks
from osum_echat.progress import name_failures
from osum_echat.token2wav.extract_parts import (Report, add_up, follow_progress, merge_raw, merge_skipped, raw_keys,
                                                raw_part, skipped_part)
from osum_echat.token2wav.speech_tokenizer import (MAX_SECONDS, TOKENIZER_RATE, SpeechTokenizer, features,
                                                   token_count)
from osum_echat.utils import fail, get_logger

log = get_logger("osum_echat.extract")


@dataclass
class Item:
    where: str
    key: str
    record: object              # raw: the json object; shard: the members dict
    audio: object = None        # a path or bytes, None = no audio
    start: float | None = None
    end: float | None = None
    codes: np.ndarray | None = None
    feats: np.ndarray | None = field(default=None, repr=False)


class Extractor:
    def __init__(self, tokenizer: SpeechTokenizer, report: Report, batch_size: int):
        self.tokenizer, self.report, self.batch_size = tokenizer, report, max(1, batch_size)
        self.checked = batch_size <= 1
        self.tokenized = 0
        self.written = 0  # samples written to the output (tokenized or copied)
        self.on_progress = None  # f(done, failed) after each batch

    def tick(self) -> None:
        if self.on_progress is not None:
            skipped = self.report.total()
            self.on_progress(self.written + skipped, skipped)

    def load(self, item: Item) -> bool:
        """Features of the item's audio; False (skipped, reported) when it cannot be used."""
        if isinstance(item.audio, str) and not os.path.isfile(item.audio):
            self.report.skip("missing_file", item.where, item.key, f"audio {item.audio} does not exist")
            return False
        try:
            wav, rate = decode_audio(item.audio, item.start, item.end)
        except Exception as e:  # soundfile raises its own error types for undecodable data
            self.report.skip("bad_audio", item.where, item.key, f"{type(e).__name__}: {e}")
            return False
        wav = resample(wav, rate, TOKENIZER_RATE)
        seconds = wav.size(1) / TOKENIZER_RATE
        if not torch.isfinite(wav).all():
            self.report.skip("nan_audio", item.where, item.key, "NaN or Inf in the waveform")
        elif seconds > MAX_SECONDS:
            self.report.skip("too_long", item.where, item.key,
                             f"{seconds:.2f} s; the speech tokenizer takes at most {MAX_SECONDS} s")
        elif wav.size(1) < 160:
            self.report.skip("empty_audio", item.where, item.key, f"{wav.size(1)} samples at 16 kHz")
        else:
            item.feats = features(wav)
            return True
        return False

    def run(self, items: list) -> None:
        """Fill item.codes for every item with usable audio (longest first, padded batches)."""
        ready = [it for it in items if it.audio is not None and self.load(it)]
        self._tokenize(sorted(ready, key=lambda it: -it.feats.shape[1]))

    def _tokenize(self, ready: list) -> None:
        for start in range(0, len(ready), self.batch_size):
            batch = ready[start:start + self.batch_size]
            if not self.checked and len(batch) > 1:
                self.checked = True
                if not self.tokenizer.check_batching([it.feats for it in batch]):
                    log.warning(f"{self.tokenizer.path}: a padded batch differs from one-by-one runs; "
                                "tokenizing one utterance at a time")
                    self.batch_size = 1
                    self._tokenize(ready[start:])
                    return
            for it, codes in zip(batch, self.tokenizer.run_features([it.feats for it in batch])):
                if len(codes) != token_count(it.feats.shape[1]):
                    log.warning(f"{it.where} key={it.key}: {len(codes)} codes for {it.feats.shape[1]} frames")
                it.codes, it.feats = codes, None
                self.tokenized += 1


def _with_tokens(extra, codes: np.ndarray):
    """extra (a dict, a JSON string of one, or None) with speech_token set; strings stay strings.

    Raises ValueError when extra is neither."""
    as_string = isinstance(extra, str)
    value = json.loads(extra) if as_string else ({} if extra is None else extra)
    if not isinstance(value, dict):
        raise ValueError(f"extra must be a JSON object, got {type(value).__name__}")
    value = dict(value)
    value["speech_token"] = [int(c) for c in codes]
    return json.dumps(value, ensure_ascii=False) if as_string else value


def _audio_of(obj: dict, audio_field: str):
    """The audio path named by --audio_field, None when absent; ValueError for a malformed one."""
    if audio_field == "wav":
        path = obj.get("wav")
    else:
        extra = obj.get("extra") or {}
        extra = json.loads(extra) if isinstance(extra, str) else extra
        if not isinstance(extra, dict):
            raise ValueError(f"extra must be a JSON object, got {type(extra).__name__}")
        path = extra.get(audio_field.split(".", 1)[1])
    if path is not None and not isinstance(path, str):
        raise ValueError(f"{audio_field} must be a path, got {path!r}")
    return path or None


# ----------------------------------------------------------------------------- raw

def _done_keys(path: Path) -> set:
    """Keys of the complete lines of an earlier output; a torn last line is cut off."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[:data.rfind(b"\n") + 1]
        path.write_bytes(data)
    return {str(json.loads(line)["key"]) for line in data.decode("utf-8").splitlines() if line.strip()}


def _absolute_paths(obj: dict, root, base: str) -> None:
    """The output list lives elsewhere: its wav paths (main and history turns) become absolute."""
    for turn in [obj] + [t for t in obj.get("history") or [] if isinstance(t, dict)]:
        if isinstance(turn.get("wav"), str) and turn["wav"]:
            turn["wav"] = os.path.abspath(resolve(turn["wav"], root, base))


def extract_raw(args, ex: Extractor, out_dir: Path, stats: collections.Counter, rank: int = 0,
                world: int = 1) -> Path:
    out_path = raw_part(out_dir, args.data, rank, world)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = _done_keys(out_path) | (_done_keys(raw_part(out_dir, args.data, 0, 1)) if world > 1 else set())
    entries = read_entries(args.data, "raw", args.root)
    with open(out_path, "a", encoding="utf-8") as out:
        pending = []
        for index, entry in enumerate(entries):
            if index % world != rank:  # another rank's share
                continue
            if entry.kind == "bad":
                ex.report.skip("bad_json", entry.where, None, entry.value)
                continue
            try:
                obj = json.loads(entry.value)
            except json.JSONDecodeError as e:
                ex.report.skip("bad_json", entry.where, None, str(e))
                continue
            if not isinstance(obj, dict) or "key" not in obj:
                ex.report.skip("no_key", entry.where, None, 'a raw list line needs a "key" field')
                continue
            if str(obj["key"]) in done:
                stats["already_done"] += 1
                continue
            try:
                _absolute_paths(obj, args.root, entry.base)
                audio = _audio_of(obj, args.audio_field)
            except ValueError as e:
                ex.report.skip("bad_json", entry.where, str(obj["key"]), str(e))
                continue
            item = Item(entry.where, str(obj["key"]), obj,
                        os.path.abspath(resolve(audio, args.root, entry.base)) if audio else None)
            if args.audio_field == "wav":
                item.start, item.end = obj.get("start"), obj.get("end")
            pending.append(item)
            if len(pending) >= 4 * ex.batch_size:
                _write_raw(pending, ex, out, stats)
                pending = []
        _write_raw(pending, ex, out, stats)
    return out_path


def _write_raw(items: list, ex: Extractor, out, stats) -> None:
    ex.run(items)
    for it in items:
        if it.audio is None:
            stats["copied_without_audio"] += 1
        elif it.codes is None:
            continue
        else:
            try:
                it.record["extra"] = _with_tokens(it.record.get("extra"), it.codes)
            except ValueError as e:  # json.JSONDecodeError is one
                ex.report.skip("bad_json", it.where, it.key, f"extra: {e}")
                continue
        out.write(json.dumps(it.record, ensure_ascii=False) + "\n")
        ex.written += 1
    out.flush()
    ex.tick()


# ----------------------------------------------------------------------------- shard

def _write_shard(items: list, ex: Extractor, tar: tarfile.TarFile, stats) -> None:
    ex.run(items)
    for it in items:
        members = it.record
        if it.audio is None:
            stats["copied_without_audio"] += 1
        elif it.codes is None:
            continue
        else:
            old = members.get("extra")
            try:
                extra = _with_tokens(json.loads(old.decode("utf-8")) if old is not None else None, it.codes)
            except ValueError as e:  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors
                ex.report.skip("bad_json", it.where, it.key, f"{it.key}.extra: {e}")
                continue
            members = dict(members, extra=json.dumps(extra, ensure_ascii=False).encode())
        for suffix, data in members.items():
            _add(tar, f"{it.key}.{suffix}" if suffix else it.key, data)
        ex.written += 1
    ex.tick()


def _shard_items(entry, args, ex: Extractor):
    for key, members in tar_groups(entry.value, entry.where, ex.report):
        where = f"{entry.where} ({entry.value})"
        if args.audio_field == "wav":
            audio = next((members[s] for s in members if s in AUDIO_SUFFIXES), None)
        else:
            try:
                extra = json.loads(members["extra"].decode("utf-8")) if "extra" in members else None
                path = _audio_of({"extra": extra}, args.audio_field)
            except ValueError as e:
                ex.report.skip("bad_json", where, key, f"{key}.extra: {e}")
                continue
            audio = os.path.abspath(resolve(path, args.root, entry.base)) if path else None
        yield Item(where, key, members, audio)


def extract_shard(args, ex: Extractor, out_dir: Path, stats: collections.Counter, rank: int = 0,
                  world: int = 1) -> list:
    """Names of the output tars in list order (every rank knows them; each writes its share)."""
    names, lines = collections.Counter(), []
    for index, entry in enumerate(read_entries(args.data, "shard", args.root)):
        if index % world != rank:  # another rank's share: only its name, for the list
            if entry.kind == "shard" and os.path.isfile(entry.value):
                name = Path(entry.value).name
                names[name] += 1
                lines.append(name if names[name] == 1 else f"{Path(name).stem}_{names[name] - 1}{Path(name).suffix}")
            continue
        if entry.kind == "bad":
            ex.report.skip("bad_json", entry.where, None, entry.value)
            continue
        if entry.kind != "shard":
            ex.report.skip("not_a_shard", entry.where, None, "only plain tar lines are read with --data_type shard")
            continue
        if not os.path.isfile(entry.value):
            ex.report.skip("missing_file", entry.where, None, f"tar {entry.value} does not exist")
            continue
        name = Path(entry.value).name
        names[name] += 1
        if names[name] > 1:  # two input tars of one name
            name = f"{Path(name).stem}_{names[name] - 1}{Path(name).suffix}"
        out_tar, marker = out_dir / name, out_dir / f"{name}.finished"
        lines.append(name)
        if marker.exists():
            stats["tars_already_done"] += 1
            continue
        with tarfile.open(out_tar, "w") as tar:
            pending = []
            for item in _shard_items(entry, args, ex):
                pending.append(item)
                if len(pending) >= 4 * ex.batch_size:
                    _write_shard(pending, ex, tar, stats)
                    pending = []
            _write_shard(pending, ex, tar, stats)
        marker.touch()
    return lines


def write_shard_list(args, out_dir: Path, lines: list) -> Path:
    list_path = out_dir / Path(args.data).name
    list_path.write_text("".join(f"{n}\n" for n in lines), encoding="utf-8")
    return list_path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Fill extra.speech_token of a raw or shard data list.")
    p.add_argument("--model_dir", required=True, help="folder with speech_tokenizer_v1.onnx")
    p.add_argument("--data_type", required=True, choices=["raw", "shard"])
    p.add_argument("--data", required=True, help="the list file")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--root", default=None, help="folder relative paths in the list resolve against")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--audio_field", default="wav", help='"wav" or "extra.NAME" (a path in extra)')
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: torch's)")
    p.add_argument("--merge_timeout", type=float, default=3600.0,
                   help="under torchrun: seconds rank 0 waits for the other ranks once its share is done "
                        "(and for all to start); then it merges what there is and names the missing ranks")
    p.add_argument("--providers", default=None, help="comma-separated onnxruntime providers "
                                                     "(default: those this machine's onnxruntime offers)")
    args = p.parse_args(argv)
    if args.audio_field != "wav" and not args.audio_field.startswith("extra."):
        fail(f"--audio_field must be 'wav' or 'extra.NAME', got {args.audio_field!r}")
    if not os.path.isfile(args.data):
        fail(f"{args.data}: list file does not exist")
    try:
        tokenizer = SpeechTokenizer(Path(args.model_dir) / "speech_tokenizer_v1.onnx",
                                    args.providers.split(",") if args.providers else None, args.threads)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    job = JobRanks.from_env(str(out_dir / f".ranks{os.environ.get('WORLD_SIZE')}"))
    rank, world = (job.rank, job.world_size) if job is not None else (0, 1)
    if job is not None:
        job.start(args.merge_timeout)
    report = Report(skipped_part(out_dir, rank, world))
    ex, stats = Extractor(tokenizer, report, args.batch_size), collections.Counter()
    finish = follow_progress(args, ex, out_dir, job)
    names = None
    if args.data_type == "raw":
        extract_raw(args, ex, out_dir, stats, rank, world)
    else:
        names = extract_shard(args, ex, out_dir, stats, rank, world)
    report.file.close()
    info = {"tokenized": ex.tokenized, "stats": dict(stats), "skipped": dict(report.counts)}
    infos, missing = {0: info}, []
    if job is not None:
        job.finish(info)
        if rank != 0:
            finish()
            job.close()
            return
        infos, missing = job.wait_all(args.merge_timeout)
        job.close()
    finish()
    if args.data_type == "raw":
        out = merge_raw(out_dir, args.data, world, raw_keys(args)) if world > 1 else raw_part(out_dir, args.data, 0, 1)
    else:
        out = write_shard_list(args, out_dir, names) if not missing else out_dir / Path(args.data).name
    skipped = merge_skipped(out_dir, world) if world > 1 else out_dir / "skipped.tsv"
    print(json.dumps({"output": str(out), **add_up(list(infos.values())), "skipped_list": str(skipped)},
                     ensure_ascii=False))
    sys.stdout.flush()
    named = name_failures(str(skipped), what="skipped", key_col=2, reason_col=0, where_col=1, header=True)
    if named:
        print(named, file=sys.stderr)
    if missing:
        fail(f"rank(s) {', '.join(map(str, missing))} of {world} did not finish within --merge_timeout "
             f"{args.merge_timeout:g} s: {out} lacks their share; run the same command(s) again to resume")


if __name__ == "__main__":
    main()
