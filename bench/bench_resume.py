"""Time to resume mid-epoch, side by side: seek with the data index, seek without it, replay.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_resume.py [--entries 130000] [--step 10000]
        [--batch_size 12] [--replay_slice 300]

Writes a raw list of `--entries` short utterances, each with its own text and its own wav path (links
to 8 real wav files, 0.5-2 s, two at 24 kHz so resampling is on the path), and reads it with
conf/tiny_ct_config.yaml (shuffle, sort, spec_aug on; static batches of `--batch_size`, one micro-batch
per step), in the main process as a trainer with num_workers 0 does. Then:
  first pass     `step` + 1 batches through the whole pipeline with the data index on: what the
                 interrupted run did (it writes the index, data/data_index.py)
  seek + index   skip_batches({0: step}), pull `step` SkippedBatch markers: a resumed run now
  seek, no index the same without the index (every skipped sample decoded and tokenized)
  replay         batches through the whole pipeline without the index: what a resume did before
                 seeking; `--replay_slice` batches are timed and the time for `step` extrapolated
                 linearly (0: replay all of them)
and checks that batch `step` (the first one trained after the resume) is the same each way.
Prints the times, the ratios and the peak RSS.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
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
        wavs.append(path)
    links = out / "wav"
    links.mkdir()
    listing = out / "data.list"
    with open(listing, "w", encoding="utf-8") as f:
        for i in range(entries):
            wav = links / f"utt{i:07d}.wav"  # one path per utterance, as in a real list
            os.symlink(wavs[i % len(wavs)], wav)
            words = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + i % 5))
            f.write(json.dumps({"key": f"utt{i:07d}", "wav": str(wav), "txt": f"{words} {i}",
                                "task": "<TRANSCRIBE>"}) + "\n")
    return listing


def dataset(config, listing, tokenizer, index=None, skip=0):
    ds = build_dataset(config, "raw", str(listing), tokenizer, rank=0, world_size=1)
    ds.use_data_index(index)
    ds.set_epoch(1)
    if skip:
        assert ds.skip_batches({0: skip})
    return ds


def seek(ds, step):
    """Time to pass over `step` batches as markers; the next (real) batch."""
    t0 = time.perf_counter()
    it = iter(ds)
    for i in range(step):
        assert isinstance(next(it), SkippedBatch), f"item {i} is not a marker"
    return time.perf_counter() - t0, next(it)


def same(a, b) -> bool:
    return a.keys == b.keys and all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("feats", "target"))


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
    step = args.step
    with tempfile.TemporaryDirectory() as tmp:
        listing = write_list(Path(tmp), args.entries)
        index = os.path.join(tmp, "data_index")
        print(f"list: {args.entries} entries; resume at step {step} (batch size {args.batch_size}, "
              f"shuffle_size {(conf.get('shuffle_conf') or {}).get('shuffle_size', 10000)}, "
              f"sort_size {(conf.get('sort_conf') or {}).get('sort_size', 500)})")

        n = step if args.replay_slice <= 0 else min(args.replay_slice, step)
        it = iter(dataset(config, listing, tokenizer, index))
        t0 = time.perf_counter()
        for i in range(step):
            next(it)
            if i + 1 == n:
                first_n = time.perf_counter() - t0
        first = time.perf_counter() - t0
        reference = next(it)
        del it
        facts = sum(1 for f in Path(index).rglob("*.txt") for _ in open(f))
        print(f"first pass:     {step} batches in {first:.1f}s (the first {n} in {first_n:.1f}s), wrote {facts} "
              f"facts to the data index", flush=True)

        with_index, batch = seek(dataset(config, listing, tokenizer, index, skip=step), step)
        print(f"seek + index:   {step} batches passed over in {with_index:.1f}s; batch {step} equals the "
              f"first pass's: {same(batch, reference)}", flush=True)
        assert same(batch, reference)
        no_index, batch = seek(dataset(config, listing, tokenizer, None, skip=step), step)
        print(f"seek, no index: {step} batches passed over in {no_index:.1f}s; batch {step} equals the "
              f"first pass's: {same(batch, reference)}", flush=True)
        assert same(batch, reference)

        it = iter(dataset(config, listing, tokenizer))
        t0 = time.perf_counter()
        for _ in range(n):
            next(it)
        measured = time.perf_counter() - t0
        replay = measured * step / n
        how = "measured" if n == step else f"extrapolated from {n} batches in {measured:.1f}s"
        print(f"replay:         {step} batches in {replay:.1f}s ({how})")
        if n == step:
            batch = next(it)
            print(f"batch {step} after replay equals the first pass's: {same(batch, reference)}")
            assert same(batch, reference)
        del it
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"replay / seek+index: {replay / with_index:.1f}x; seek without / with index: "
          f"{no_index / with_index:.1f}x; first {n} batches, first pass / replay (index writing): "
          f"{first_n / measured:.2f}x; "
          f"peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
