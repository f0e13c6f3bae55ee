"""Small raw-format training lists built offline (tones for speech, short texts)."""
from __future__ import annotations

import json
import os

import numpy as np
import soundfile as sf

WORDS = ["red", "green", "blue", "black", "white", "gold", "pink", "gray"]


def write_raw_list(out_dir, n_asr=8, n_t2t=8, name="train.jsonl") -> str:
    """ASR samples (a distinct two-tone chirp per word) and text-to-text samples, one per line."""
    os.makedirs(out_dir, exist_ok=True)
    lines = []
    sr = 16000
    t = np.arange(int(0.6 * sr)) / sr
    for i in range(n_asr):
        word = WORDS[i % len(WORDS)]
        f0, f1 = 200 + 90 * (i % len(WORDS)), 900 + 60 * i
        audio = 0.3 * np.sin(2 * np.pi * np.where(t < 0.3, f0, f1) * t).astype(np.float32)
        wav = os.path.join(out_dir, f"tone_{i}.wav")
        sf.write(wav, audio, sr, subtype="PCM_16")
        lines.append({"key": f"asr_{i}", "txt": f"{word} number {i}", "wav": wav,
                      "task": "<TRANSCRIBE>", "extra": {"duration": 0.6}})
    for i in range(n_t2t):
        word = WORDS[i % len(WORDS)]
        lines.append({"key": f"t2t_{i}", "txt": f"the color is {word}", "wav": "",
                      "task": "<TEXT2TEXT>", "extra": {"question": f"what color is item {i}"}})
    path = os.path.join(out_dir, name)
    with open(path, "w") as f:
        f.writelines(json.dumps(x) + "\n" for x in lines)
    return path
