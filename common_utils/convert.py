"""Convert between the three data formats (see common_utils/README.md).

    python -m common_utils.convert raw2shard     --data data.list --out DIR [--per_shard 1000] [--root R]
    python -m common_utils.convert shard2combine --data shards_list.txt --out DIR
    python -m common_utils.convert combine2shard --data DIR/combines_list.txt --out DIR

Everything streams: one utterance (raw) or one tar (shard/combine) is in
memory at a time. Each finished tar gets a `<tar>.finished` marker, written
last, so an interrupted run can be restarted and finished tars are kept.
Broken input items are skipped with a warning and counted in the summary line.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
from pathlib import Path

from osum_echat.data.features import AUDIO_SUFFIXES
from osum_echat.data.skips import SkipCounter
from osum_echat.data.sources import read_entries, read_entry

META_FIELDS = ("txt", "task", "extra")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _audio_member(sample) -> tuple:
    """(suffix, bytes) of the sample's audio, read from a path or taken as is."""
    audio = sample.get("audio")
    if audio is None:
        return None, None
    if isinstance(audio, (bytes, bytearray)):
        return "wav", bytes(audio)
    suffix = Path(audio).suffix.lstrip(".").lower() or "wav"
    with open(audio, "rb") as f:
        return (suffix if suffix in AUDIO_SUFFIXES else "wav"), f.read()


def write_sample(tar: tarfile.TarFile, sample: dict, audio_only: bool = False) -> None:
    """KEY.<audio>, KEY.wav_N (history) and, unless audio_only, KEY.txt/.task/.extra/.<field>."""
    key = sample["key"]
    suffix, audio = _audio_member(sample)
    if audio is not None:
        _add(tar, f"{key}.{suffix}", audio)
    for i, turn in enumerate(sample.get("history") or [], start=1):
        t_suffix, t_audio = _audio_member(turn)
        if t_audio is not None:
            _add(tar, f"{key}.wav_{i}", t_audio)
        if not audio_only:
            _add(tar, f"{key}.txt_{i}", str(turn.get("txt", "")).encode("utf-8"))
    if audio_only:
        return
    for field, value in meta_of(sample).items():
        if field == "key":
            continue
        data = json.dumps(value, ensure_ascii=False) if field == "extra" or not isinstance(value, str) else value
        _add(tar, f"{key}.{field}", data.encode("utf-8"))


def meta_of(sample: dict) -> dict:
    """The JSON-able metadata of a sample (what a combine jsonl line holds)."""
    skip = {"audio", "src", "history", "start", "end"}
    meta = {k: v for k, v in sample.items() if k not in skip}
    meta.setdefault("txt", "")
    return meta


class ShardWriter:
    """Writes shards_000000000.tar, ... with `per_shard` utterances each, plus .finished markers."""

    def __init__(self, out_dir: str, per_shard: int, prefix: str = "shards"):
        self.out_dir, self.per_shard, self.prefix = Path(out_dir), per_shard, prefix
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.tar, self.count, self.index, self.paths = None, 0, 0, []

    def add(self, sample: dict) -> None:
        if self.tar is None:
            path = self.out_dir / f"{self.prefix}_{self.index:09d}.tar"
            self.tar = tarfile.open(path, "w")
            self.paths.append(path)
        write_sample(self.tar, sample)
        self.count += 1
        if self.count >= self.per_shard:
            self.close_tar()

    def close_tar(self) -> None:
        if self.tar is not None:
            self.tar.close()
            Path(str(self.paths[-1]) + ".finished").touch()
            self.tar, self.count, self.index = None, 0, self.index + 1

    def close(self) -> list:
        self.close_tar()
        return self.paths


def raw_to_shard(data_list: str, out_dir: str, per_shard: int = 1000, root: str | None = None) -> tuple:
    counter = SkipCounter(max_workers=0)
    writer = ShardWriter(out_dir, per_shard)
    for entry in read_entries(data_list, "raw", root):
        for sample in read_entry(entry, counter, root):
            if isinstance(sample.get("audio"), str) and not os.path.exists(sample["audio"]):
                counter.skip("missing_file", entry.where, sample["key"], f"audio {sample['audio']} does not exist")
                continue
            if sample.get("start") is not None:
                sample = dict(sample, audio=_cut(sample))
            writer.add(sample)
    paths = writer.close()
    list_path = Path(out_dir) / "shards_list.txt"
    list_path.write_text("".join(f"{p.resolve()}\n" for p in paths), encoding="utf-8")
    return list_path, counter.counts()


def _cut(sample) -> bytes:
    """A start/end segment re-encoded as 16-bit wav (shards store whole utterances)."""
    import soundfile

    from osum_echat.data.features import decode_audio

    wav, rate = decode_audio(sample["audio"], sample.get("start"), sample.get("end"))
    buf = io.BytesIO()
    soundfile.write(buf, wav[0].numpy(), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def shard_to_combine(shard_list: str, out_dir: str, root: str | None = None) -> tuple:
    counter = SkipCounter(max_workers=0)
    out = Path(out_dir)
    (out / "lists").mkdir(parents=True, exist_ok=True)
    (out / "tars").mkdir(parents=True, exist_ok=True)
    lists = []
    for entry in read_entries(shard_list, "shard", root):
        stem = Path(entry.value).stem
        meta_path, tar_path = out / "lists" / f"{stem}.list", out / "tars" / f"{stem}.tar"
        with open(meta_path, "w", encoding="utf-8") as meta, tarfile.open(tar_path, "w") as tar:
            for sample in read_entry(entry, counter, root):
                line = dict(meta_of(sample), wav="only-meta")
                if sample.get("history"):
                    line["history"] = [{"txt": t.get("txt", "")} for t in sample["history"]]
                meta.write(json.dumps(line, ensure_ascii=False) + "\n")
                write_sample(tar, sample, audio_only=True)
        Path(str(tar_path) + ".finished").touch()
        lists.append(meta_path.resolve())
    (out / "combines_list.txt").write_text("".join(f"{p}\n" for p in lists), encoding="utf-8")
    (out / "combines_tar_root.txt").write_text(f"{(out / 'tars').resolve()}\n", encoding="utf-8")
    return out / "combines_list.txt", counter.counts()


def combine_to_shard(combine_list: str, out_dir: str, root: str | None = None) -> tuple:
    counter = SkipCounter(max_workers=0)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for entry in read_entries(combine_list, "combine", root):
        tar_path = out / (Path(entry.value).stem + ".tar")
        with tarfile.open(tar_path, "w") as tar:
            for sample in read_entry(entry, counter, root):
                write_sample(tar, sample)
        Path(str(tar_path) + ".finished").touch()
        paths.append(tar_path.resolve())
    list_path = out / "shards_list.txt"
    list_path.write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
    return list_path, counter.counts()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Convert OSUM-EChat data between raw, shard and combine formats.")
    p.add_argument("mode", choices=["raw2shard", "shard2combine", "combine2shard"])
    p.add_argument("--data", required=True, help="input list: raw jsonl, shard list or combines_list.txt")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--per_shard", type=int, default=1000, help="raw2shard: utterances per tar")
    p.add_argument("--root", default=None, help="folder relative paths in the input resolve against")
    args = p.parse_args(argv)
    if not os.path.exists(args.data):
        print(f"error: {args.data} does not exist", file=sys.stderr)
        raise SystemExit(2)
    if args.mode == "raw2shard":
        out, skipped = raw_to_shard(args.data, args.out, args.per_shard, args.root)
    elif args.mode == "shard2combine":
        out, skipped = shard_to_combine(args.data, args.out, args.root)
    else:
        out, skipped = combine_to_shard(args.data, args.out, args.root)
    print(json.dumps({"list": str(out), "skipped": skipped}))


if __name__ == "__main__":
    main()
