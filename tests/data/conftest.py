"""Fixtures for the data tests: small real corpora written to tmp dirs (wav files + jsonl lists)."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile


def write_wav(path: Path, seconds: float = 0.5, rate: int = 16000, freq: float = 220.0, channels: int = 1,
              values=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    given = values is not None
    if not given:
        t = np.arange(int(seconds * rate)) / rate
        values = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(int(freq)).standard_normal(t.size)
        if channels > 1:
            values = np.stack([values] * channels, axis=1)
    soundfile.write(str(path), np.asarray(values, dtype=np.float32), rate,
                    subtype="FLOAT" if given else "PCM_16")
    return path


class Corpus:
    """Builds a raw jsonl list in a tmp dir; `add` writes the wav (relative path) and the line."""

    def __init__(self, root: Path):
        self.root = root
        self.lines = []

    def add(self, key, txt="hello world", task="<TRANSCRIBE>", extra=None, seconds=0.5, rate=16000,
            wav=True, **fields):
        obj = {"key": key, "txt": txt, "task": task}
        if wav:
            rel = f"wav/{key}.wav"
            write_wav(self.root / rel, seconds=seconds, rate=rate, freq=200 + 10 * len(self.lines))
            obj["wav"] = rel
        if extra is not None:
            obj["extra"] = extra
        obj.update(fields)
        self.lines.append(json.dumps(obj, ensure_ascii=False))
        return obj

    def add_line(self, line: str):
        self.lines.append(line)

    def write(self, name="data.list") -> Path:
        path = self.root / name
        path.write_text("".join(x + "\n" for x in self.lines), encoding="utf-8")
        return path


@pytest.fixture
def corpus(tmp_path):
    return Corpus(tmp_path)


@pytest.fixture
def data_config(tiny_config):
    """The tiny config with deterministic, small batches and no augmentation."""
    cfg = copy.deepcopy(tiny_config)
    conf = cfg["dataset_conf"]
    conf["batch_conf"] = {"batch_type": "static", "batch_size": 2}
    conf.update(shuffle=False, sort=False, spec_aug=False, spec_sub=False, spec_trim=False, multi_num=1)
    conf["filter_conf"]["min_length"] = 1
    return cfg


@pytest.fixture
def upstream_root(shared_dir, tmp_path):
    """A folder laid out like upstream's repo (common_utils/fake_data -> ../shared sample data),
    so the published relative paths resolve with --root."""
    (tmp_path / "up" / "common_utils").mkdir(parents=True)
    os.symlink(shared_dir / "upstream_fake_data", tmp_path / "up" / "common_utils" / "fake_data")
    return tmp_path / "up"


@pytest.fixture
def wav_writer():
    return write_wav
