"""Writing audio files: 16-bit PCM wavs by default (every player and sox read them without warnings);
float32 only on request."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SUBTYPES = {"pcm16": "PCM_16", "float32": "FLOAT"}  # --wav_format choices -> soundfile subtypes


def write_wav(path, samples, rate: int, subtype: str = "PCM_16") -> Path:
    """Write mono (n,) or (n, channels) samples in [-1, 1] (numpy or torch) to `path`; the parent folder is
    created. PCM_16 clips to [-1, 1] first (a float beyond full scale would wrap around)."""
    import soundfile

    if hasattr(samples, "detach"):
        samples = samples.detach().float().cpu().numpy()
    samples = np.asarray(samples, dtype=np.float32)
    if subtype.startswith("PCM"):
        samples = np.clip(samples, -1.0, 1.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(os.fspath(path), samples, int(rate), subtype=subtype)
    return path


def add_wav_format_arg(parser) -> None:
    """--wav_format pcm16|float32 on a CLI that writes audio."""
    parser.add_argument("--wav_format", choices=list(SUBTYPES), default="pcm16",
                        help="written wavs: 16-bit PCM (default) or 32-bit float")
