"""Shared fixtures. Tests run from any directory; paths are taken relative to the repo root."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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
