"""Shared fixtures. Tests run from any directory; paths are taken relative to the repo root."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"

# Keep the 2-core machine usable when several test processes run.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _run_from_repo_root():
    """Configs name paths relative to the repo root (as upstream's do); run every test from there."""
    old = os.getcwd()
    os.chdir(REPO_ROOT)
    yield
    os.chdir(old)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (upstream sample data; the key manifests ship in conf/reference). Absent outside this workplace."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"{SHARED_DIR} is absent: it holds upstream's sample data and reference manifests, "
                    "present only in the project workplace")
    return SHARED_DIR


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:
    """The tiny Qwen2 LLM directory, built fresh once per session (the committed copy must match it)."""
    from osum_echat.tiny_llm import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))


@pytest.fixture(scope="session")
def tiny_config() -> dict:
    from osum_echat.config import load_config

    return load_config(REPO_ROOT / "conf" / "tiny_ct_config.yaml")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from osum_echat.tokenizer import load_tokenizer

    return load_tokenizer(str(REPO_ROOT / "conf" / "tiny_llm"))


# ------------------------------------------------------------------ a tiny random checkpoint and small wavs
# (the runtime, chat CLI, web demo and server tests)

@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, repo_root, tiny_tokenizer):
    """(config path, checkpoint a, checkpoint b): b differs from a only in the adapter projection."""
    from osum_echat.config import load_config
    from osum_echat.models import build_model
    from osum_echat.models.checkpoint import save_checkpoint

    out = tmp_path_factory.mktemp("tiny_ckpt")
    torch.manual_seed(0)
    model = build_model(load_config(repo_root / "conf/tiny_ct_config.yaml"), tokenizer=tiny_tokenizer)
    state = model.state_dict()
    save_checkpoint(state, out / "a.pt")
    state = dict(state)
    state["speech_llama_proj.weight"] = state["speech_llama_proj.weight"] + 0.5
    save_checkpoint(state, out / "b.pt")
    return str(repo_root / "conf/tiny_ct_config.yaml"), str(out / "a.pt"), str(out / "b.pt")


def write_tone(path, seconds=1.0, rate=16000, channels=1, freq=300.0):
    t = np.arange(int(seconds * rate)) / rate
    x = (0.2 * np.sin(2 * np.pi * freq * t)).astype("float32")
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, rate)
    return str(path)


@pytest.fixture(scope="session")
def wavs(tmp_path_factory):
    d = tmp_path_factory.mktemp("wavs")
    bad = d / "not_audio.wav"
    bad.write_text("this is not audio\n")
    return {"q": write_tone(d / "q.wav"), "q2": write_tone(d / "q2.wav", 1.5, freq=500.0),
            "stereo8k": write_tone(d / "stereo8k.wav", 1.0, 8000, 2), "long": write_tone(d / "long.wav", 31.0),
            "long8k": write_tone(d / "long8k.wav", 31.0, 8000),  # 0.5 MB: under the page's upload limit
            "not_audio": str(bad)}


@pytest.fixture(scope="session")
def tiny_token2wav(tmp_path_factory):
    """A random token2wav directory in the released layout (python -m osum_echat.bin.token2wav make-tiny)."""
    from osum_echat.bin.token2wav import make_tiny

    return str(make_tiny(tmp_path_factory.mktemp("tiny_t2w")))
