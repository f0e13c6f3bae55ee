"""Data pipeline throughput against a bare read-decode-log-mel loop, side by side.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_dataloader.py [--utts 300] [--workers 0 1 2]

Synthesises ~300 utterances (16 kHz tones + noise, 2-7 s, ASR and speech-to-speech
tasks with speech tokens) into shards under a temp dir, then measures, in one
run and on the same shards:
  pipeline  build_dataset(conf/tiny_ct_config.yaml, "shard") through a DataLoader:
            tokenize, filter, log-mel, shuffle, sort, batch, pad
  bare      a loop that only reads the tars, decodes the audio and computes the
            log-mel (same DataLoader, same worker count)
and prints samples/s, audio-seconds/s and the pipeline/bare ratio for 0, 1 and 2
workers (best of N interleaved runs), the same ratio in CPU seconds (main process +
workers; steadier than wall time on a shared machine), and the resident memory of
the main process after each of 3 pipeline epochs.
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
from torch.utils.data import DataLoader, IterableDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common_utils.convert import raw_to_shard  # noqa: E402
from osum_echat.config import load_config  # noqa: E402
from osum_echat.data import features  # noqa: E402
from osum_echat.data.dataset import build_dataloader, build_dataset  # noqa: E402
from osum_echat.data.skips import SkipCounter  # noqa: E402
from osum_echat.data.sources import read_entries, tar_groups  # noqa: E402
from osum_echat.tokenizer import load_tokenizer  # noqa: E402

WORDS = "the quick brown fox jumps over a lazy dog 今天 天气 很 好 我们 一起 去 公园 散步 吧".split()


def synthesise(out: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = []
    (out / "wav").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        seconds = rng.uniform(2, 7)
        t = np.arange(int(seconds * 16000)) / 16000
        wav = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.02 * rng.standard_normal(t.size)
        path = out / "wav" / f"utt{i:04d}.wav"
        soundfile.write(str(path), wav.astype(np.float32), 16000, subtype="PCM_16")
        txt = " ".join(rng.choice(WORDS, size=int(rng.integers(4, 16))))
        obj = {"key": f"utt{i:04d}", "wav": str(path), "txt": txt}
        if i % 3 == 0:
            obj.update(task="<S2TCHAT> <TEXT2TOKEN>",
                       extra={"speech_token": rng.integers(0, 200, int(seconds * 25)).tolist()})
        else:
            obj["task"] = "<TRANSCRIBE>"
        lines.append(json.dumps(obj, ensure_ascii=False))
    raw = out / "raw.list"
    raw.write_text("\n".join(lines) + "\n", encoding="utf-8")
    shard_list, _ = raw_to_shard(str(raw), str(out / "shards"), per_shard=30)
    return shard_list


class BareLoop(IterableDataset):
    """Read tars, decode audio, log-mel; nothing else. Tars split over workers like the pipeline."""

    def __init__(self, shard_list: str):
        self.entries = read_entries(shard_list, "shard")

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        counter = SkipCounter(max_workers=0)
        for entry in self.entries[worker::workers]:
            for key, members in tar_groups(entry.value, entry.where, counter):
                wav, rate = features.decode_audio(members["wav"])
                yield features.log_mel(features.resample(wav, rate, 16000)).size(0)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds() -> float:
    """CPU time of this process plus its finished (joined) children: the dataloader workers."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def time_pipeline(cfg, shard_list, tok, workers):
    ds = build_dataset(cfg, "shard", shard_list, tok, mode="train")
    ds.set_epoch(0)
    start, cpu = time.perf_counter(), cpu_seconds()
    n = frames = 0
    loader = build_dataloader(ds, num_workers=workers, prefetch=4)
    for batch in loader:
        n += len(batch)
        frames += int(batch.feats_lengths.sum())
    del loader  # joins the workers so their CPU time is counted
    return n, frames / 100, time.perf_counter() - start, cpu_seconds() - cpu


def time_bare(shard_list, workers):
    kw = {"prefetch_factor": 4, "worker_init_fn": lambda _: torch.set_num_threads(1)} if workers else {}
    start, cpu = time.perf_counter(), cpu_seconds()
    n = frames = 0
    loader = DataLoader(BareLoop(shard_list), batch_size=None, num_workers=workers, **kw)
    for num_frames in loader:
        n += 1
        frames += num_frames
    del loader
    return n, frames / 100, time.perf_counter() - start, cpu_seconds() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--utts", type=int, default=300)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--repeats", type=int, default=5, help="best of N timings per setting")
    args = p.parse_args()
    torch.set_num_threads(1)
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "conf" / "tiny_ct_config.yaml")
    conf = cfg["dataset_conf"]
    conf.update(multi_num=1, spec_aug=False, spec_sub=False, spec_trim=False)
    conf["batch_conf"] = {"batch_type": "static", "batch_size": 8}
    conf["other_tokenze_conf"] = {}
    tok = load_tokenizer(str(root / cfg["llm_path"]))
    with tempfile.TemporaryDirectory() as tmp:
        shard_list = str(synthesise(Path(tmp), args.utts))
        print(f"{'workers':>7} | {'pipeline utt/s':>14} {'audio-s/s':>10} | {'bare utt/s':>10} {'audio-s/s':>10}"
              f" | {'ratio':>6} | {'cpu-ratio':>9}")
        for w in args.workers:
            pipes, bares = [], []
            for _ in range(args.repeats):  # interleaved, best of N: the machine is shared
                pipes.append(time_pipeline(copy.deepcopy(cfg), shard_list, tok, w))
                bares.append(time_bare(shard_list, w))
            pipe, bare = min(pipes, key=lambda r: r[2]), min(bares, key=lambda r: r[2])
            assert pipe[0] == bare[0] == args.utts, (pipe[0], bare[0])
            cpu_ratio = min(b[3] for b in bares) / min(p[3] for p in pipes)
            print(f"{w:>7} | {pipe[0] / pipe[2]:>14.1f} {pipe[1] / pipe[2]:>10.1f} | {bare[0] / bare[2]:>10.1f}"
                  f" {bare[1] / bare[2]:>10.1f} | {bare[2] / pipe[2]:>6.2f} | {cpu_ratio:>9.2f}")
        ds = build_dataset(copy.deepcopy(cfg), "shard", shard_list, tok, mode="train")
        mem = []
        for epoch in range(3):
            ds.set_epoch(epoch)
            for _ in ds:
                pass
            mem.append(rss_mb())
        print("main-process RSS after epochs 1..3 (0 workers): " + ", ".join(f"{m:.0f} MB" for m in mem))


if __name__ == "__main__":
    main()
