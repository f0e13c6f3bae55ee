"""Time to resume mid-epoch: seek (SkippedBatch markers, no features) against replay, side by side.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_resume.py [--entries 130000] [--step 10000]
        [--batch_size 12] [--replay_slice 300]

Writes a raw list of `--entries` short utterances (8 real wav files, 0.5-2 s, two at 24 kHz so
resampling is on the path, each referenced many times) and reads it with conf/tiny_ct_config.yaml
(shuffle, sort, spec_aug on; static batches of `--batch_size`, one micro-batch per step), in the
main process as a trainer with num_workers 0 does. Then:
  seek    skip_batches({0: step}) and pull `step` SkippedBatch markers: what a resumed run does now
  replay  pull batches through the whole pipeline (decode, resample, log-mel, augmentation,
          padding): what it did before; `--replay_slice` batches are timed and the time for
          `step` extrapolated linearly (0 = replay all of them)
and checks that batch `step` (the first one trained after the resume) is the same either way.
Prints both times, the ratio and the peak RSS.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from osum_echat.config import load_config  # noqa: E402
from osum_echat.data.batch import SkippedBatch  # noqa: E402
from osum_echat.data.dataset import build_dataset  # noqa: E402
from osum_echat.tokenizer import load_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORDS = "the quick brown fox jumps over a lazy dog and runs home".split()


def write_list(out: Path, entries: int) -> Path:
    rng = np.random.default_rng(0)
    wavs = []
    for i in range(8):
        rate = 24000 if i % 4 == 3 else 16000
        t = np.arange(int((0.5 + 0.2 * i) * rate)) / rate
        audio = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.01 * rng.standard_normal(t.size)
        path = out / f"w{i}.wav"
        soundfile.write(str(path), audio.astype(np.float32), rate, subtype="PCM_16")
        wavs.append(str(path))
    listing = out / "data.list"
    with open(listing, "w", encoding="utf-8") as f:
        for i in range(entries):
            words = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + i % 5))
            f.write(json.dumps({"key": f"utt{i:07d}", "wav": wavs[i % len(wavs)], "txt": words,
                                "task": "<TRANSCRIBE>"}) + "\n")
    return listing


def dataset(config, listing, tokenizer):
    ds = build_dataset(config, "raw", str(listing), tokenizer, rank=0, world_size=1)
    ds.set_epoch(1)
    return ds


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=int, default=130000)
    p.add_argument("--step", type=int, default=10000)
    p.add_argument("--batch_size", type=int, default=12)
    p.add_argument("--replay_slice", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)
    config = copy.deepcopy(load_config(REPO / "conf" / "tiny_ct_config.yaml"))
    conf = config["dataset_conf"]
    conf.update(shuffle=True, sort=True, spec_aug=True, multi_num=1,
                batch_conf={"batch_type": "static", "batch_size": args.batch_size})
    conf["filter_conf"]["min_length"] = 1
    tokenizer = load_tokenizer(str(REPO / "conf" / "tiny_llm"))
    with tempfile.TemporaryDirectory() as tmp:
        listing = write_list(Path(tmp), args.entries)
        print(f"list: {args.entries} entries; resume at step {args.step} (batch size {args.batch_size}, "
              f"shuffle_size {(conf.get('shuffle_conf') or {}).get('shuffle_size', 10000)}, "
              f"sort_size {(conf.get('sort_conf') or {}).get('sort_size', 500)})")

        ds = dataset(config, listing, tokenizer)
        assert ds.skip_batches({0: args.step})
        t0 = time.perf_counter()
        it = iter(ds)
        for i in range(args.step):
            item = next(it)
            assert isinstance(item, SkippedBatch), f"item {i} is not a marker"
        seek = time.perf_counter() - t0
        print(f"seek:   {args.step} batches passed over in {seek:.1f}s", flush=True)
        first_seek = next(it)
        del it

        ds = dataset(config, listing, tokenizer)
        n = args.step if args.replay_slice <= 0 else min(args.replay_slice, args.step)
        it = iter(ds)
        t0 = time.perf_counter()
        for _ in range(n):
            next(it)
        measured = time.perf_counter() - t0
        replay = measured * args.step / n
        how = "measured" if n == args.step else f"extrapolated from {n} batches in {measured:.1f}s"
        print(f"replay: {args.step} batches in {replay:.1f}s ({how})")
        if n == args.step:
            first_replay = next(it)
            same = first_replay.keys == first_seek.keys and torch.equal(first_replay.feats, first_seek.feats)
            print(f"batch {args.step} after seek equals batch {args.step} after replay: {same}")
            assert same
        del it
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"replay/seek time ratio: {replay / seek:.1f}x; peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
