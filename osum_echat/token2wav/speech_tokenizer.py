"""The 25 Hz speech tokenizer (speech_tokenizer_v1.onnx) on padded batches.

Input: 16 kHz waveforms. Each gets openai-whisper's 128-bin log-mel on its own
(the max-8 clamp is per utterance, as in upstream's one-at-a-time calls); a
batch is zero-padded to its longest item and passed with the per-item lengths
("feats_length"), and each item's codes are cut to its own token count. Upstream
feeds one utterance per call; `check_batching` compares both ways on real data.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.features import log_mel
from .onnx_models import SPEECH_TOKENIZER, open_session

TOKENIZER_RATE = 16000
MAX_SECONDS = 30           # the released tokenizer's limit (upstream asserts it)
N_MELS = 128


def token_count(frames: int) -> int:
    """Codes for `frames` log-mel frames: two stride-2 convolutions (kernel 3, padding 1)."""
    return ((frames - 1) // 2 + 1 - 1) // 2 + 1 if frames > 0 else 0


def features(wav_16k: torch.Tensor) -> np.ndarray:
    """whisper.log_mel_spectrogram(wav, n_mels=128) -> (128, frames) float32."""
    return log_mel(wav_16k.reshape(-1).float(), num_mel_bins=N_MELS).T.contiguous().numpy()


class SpeechTokenizer:
    def __init__(self, path, providers=None, threads: int | None = None):
        self.path = path
        self.session = open_session(path, SPEECH_TOKENIZER, providers, threads)
        self.names = [node.name for node in self.session.get_inputs()]

    def run_features(self, feats: list) -> list:
        """One onnxruntime call on (128, T_i) features -> list of (n_i,) int64 codes."""
        lengths = np.array([f.shape[1] for f in feats], dtype=np.int32)
        batch = np.zeros((len(feats), N_MELS, int(lengths.max())), dtype=np.float32)
        for i, f in enumerate(feats):
            batch[i, :, :f.shape[1]] = f
        out = self.session.run(None, {self.names[0]: batch, self.names[1]: lengths})[0]
        if len(feats) == 1:  # upstream: the whole output, flattened
            return [np.asarray(out, dtype=np.int64).reshape(-1)]
        out = np.asarray(out, dtype=np.int64).reshape(len(feats), -1)
        return [out[i, :token_count(int(n))] for i, n in enumerate(lengths)]

    def __call__(self, wavs: list, batch_size: int = 8) -> list:
        """25 Hz codes of 16 kHz waveforms; raises ValueError for one over 30 s or shorter than a frame."""
        feats = []
        for i, wav in enumerate(wavs):
            seconds = wav.numel() / TOKENIZER_RATE
            if seconds > MAX_SECONDS:
                raise ValueError(f"audio {i} is {seconds:.2f} s long; the speech tokenizer takes at most "
                                 f"{MAX_SECONDS} s")
            f = features(wav)
            if f.shape[1] == 0:
                raise ValueError(f"audio {i} has {wav.numel()} samples, fewer than one 10 ms frame")
            feats.append(f)
        codes = []
        for start in range(0, len(feats), max(1, batch_size)):
            codes += self.run_features(feats[start:start + batch_size])
        return codes

    def check_batching(self, feats: list) -> bool:
        """Whether a padded batch of `feats` gives each item's one-at-a-time codes."""
        if len(feats) < 2:
            return True
        together = self.run_features(feats)
        return all(np.array_equal(a, self.run_features([f])[0]) for a, f in zip(together, feats))
