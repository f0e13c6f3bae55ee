"""Speaker prompt front-end: a prompt wav -> prompt mel, prompt speech tokens, x-vector.

What upstream's `frontend_zero_shot_22k` computes (spec §5):
- prompt mel: the prompt at 22,050 Hz, Matcha's `mel_spectrogram` (reflect pad,
  |STFT|, librosa Slaney mel filters 0..8 kHz, ln(max(x, 1e-5))) -> (frames, 80);
- prompt tokens: whisper 128-bin log-mel of the 16 kHz prompt -> speech_tokenizer_v1.onnx;
- x-vector: Kaldi fbank (80 bins, dither 0) of the 16 kHz prompt, mean-normalised
  over time -> campplus.onnx -> (192,).

The result is a `SpeakerPrompt`, which can be saved as three .npy files and
loaded again, so a fixed voice needs no ONNX run at all.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.features import decode_audio, fbank, mel_filters, resample
from .onnx_models import CAMPPLUS, open_session
from .speech_tokenizer import MAX_SECONDS, TOKENIZER_RATE, SpeechTokenizer

SPK_DIM = 192


@dataclass
class SpeakerPrompt:
    """prompt_mel (frames, 80) float32, prompt_tokens (n,) int64, spk_embedding (192,) float32.

    Zero-length prompt_mel / prompt_tokens are valid: a speaker embedding only
    (the flow then runs without a prompt part)."""
    prompt_mel: np.ndarray
    prompt_tokens: np.ndarray
    spk_embedding: np.ndarray

    FILES = ("prompt_mel.npy", "prompt_tokens.npy", "spk_embedding.npy")

    def __post_init__(self):
        self.prompt_mel = _as_array(self.prompt_mel, np.float32, "prompt_mel")
        if self.prompt_mel.size == 0:
            self.prompt_mel = self.prompt_mel.reshape(0, 80)
        self.prompt_tokens = _as_array(self.prompt_tokens, np.int64, "prompt_tokens").reshape(-1)
        self.spk_embedding = _as_array(self.spk_embedding, np.float32, "spk_embedding").reshape(-1)
        if self.prompt_mel.ndim != 2 or self.prompt_mel.shape[1] != 80:
            raise ValueError(f"prompt_mel must have shape (frames, 80), got {self.prompt_mel.shape}")
        if self.spk_embedding.shape != (SPK_DIM,):
            raise ValueError(f"spk_embedding must have shape ({SPK_DIM},), got {self.spk_embedding.shape}")
        # the upper bound is the model's vocabulary: checked where a model is known (Token2Wav.prompt_tensors)
        check_token_range(self.prompt_tokens, None)

    def save(self, out_dir) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, value in zip(self.FILES, (self.prompt_mel, self.prompt_tokens, self.spk_embedding)):
            np.save(out / name, value)
        return out

    @classmethod
    def load(cls, prompt_dir) -> "SpeakerPrompt":
        src = Path(prompt_dir)
        arrays = []
        for name in cls.FILES:
            path = src / name
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; a prompt directory holds {', '.join(cls.FILES)} "
                                        f"(write one with: python -m osum_echat.bin.token2wav save-prompt "
                                        f"--model_dir DIR --prompt_wav W --out {src})")
            try:
                arrays.append(np.load(path, allow_pickle=False))
            except ValueError as e:
                raise ValueError(f"{path}: not a numeric .npy array: {e}") from e
        try:
            return cls(*arrays)
        except ValueError as e:
            raise ValueError(f"{src}: {e}") from e


def check_token_range(tokens: np.ndarray, vocab_size: int | None, name: str = "prompt_tokens") -> None:
    """ValueError naming the first id below 0 or, with a vocab_size (the flow's, from cosyvoice.yaml), not below it."""
    tokens = np.asarray(tokens).reshape(-1)
    bad = np.flatnonzero((tokens < 0) | (tokens >= (vocab_size if vocab_size is not None else np.inf)))
    if bad.size:
        bound = f"outside [0, {vocab_size}) (the model's speech-token vocabulary)" if vocab_size else "negative"
        raise ValueError(f"{name}[{bad[0]}] = {tokens[bad[0]]} is {bound}")


def _as_array(value, dtype, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.size and not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(dtype, np.integer) and arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


@dataclass(frozen=True)
class MelConfig:
    """cosyvoice.yaml's `feat_extractor` (Matcha mel_spectrogram) of the released 25 Hz model."""
    sample_rate: int = 22050
    n_fft: int = 1024
    num_mels: int = 80
    hop_size: int = 256
    win_size: int = 1024
    fmin: float = 0.0
    fmax: float = 8000.0

    @classmethod
    def from_dict(cls, conf: dict) -> "MelConfig":
        """From the yaml's feat_extractor arguments (Matcha spells the rate `sampling_rate`; an
        unresolved `!ref` is left at the default)."""
        conf = dict(conf)
        if "sampling_rate" in conf:
            conf.setdefault("sample_rate", conf.pop("sampling_rate"))
        if conf.get("center"):
            raise ValueError("feat_extractor: center=True is not supported (the released model uses False)")
        return cls(**{k: conf[k] for k in cls.__dataclass_fields__
                      if isinstance(conf.get(k), (int, float)) and not isinstance(conf.get(k), bool)})


def prompt_mel(wav: torch.Tensor, conf: MelConfig = MelConfig()) -> np.ndarray:
    """Matcha's mel_spectrogram (center=False) of a waveform at conf.sample_rate -> (floor(N/hop), mels)."""
    audio = wav.reshape(1, 1, -1).float()
    pad = (conf.n_fft - conf.hop_size) // 2
    if audio.size(-1) <= pad:
        raise ValueError(f"audio of {audio.size(-1)} samples is too short for a prompt mel (needs > {pad})")
    audio = F.pad(audio, (pad, pad), mode="reflect").reshape(-1)
    spec = torch.stft(audio, conf.n_fft, conf.hop_size, conf.win_size, window=torch.hann_window(conf.win_size),
                      center=False, onesided=True, return_complex=True)
    magnitude = torch.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)
    mel = mel_filters(conf.num_mels, conf.n_fft, conf.sample_rate, conf.fmin, conf.fmax) @ magnitude
    return torch.log(torch.clamp(mel, min=1e-5)).T.contiguous().numpy()


def load_prompt_audio(path, sample_rate: int = 22050) -> tuple:
    """(prompt at sample_rate, prompt at 16 kHz), both (1, N) float32.

    As upstream, the 16 kHz copy is made from the 22,050 Hz one (two resamplings,
    which changes the tokens/x-vector slightly against resampling the file once).
    Upstream refuses files below 22,050 Hz; they are resampled up here, since the
    prompt mel stops at 8 kHz and a 16 kHz file covers it."""
    wav, rate = decode_audio(os.fspath(path))
    if wav.numel() == 0:
        raise ValueError(f"{path}: the prompt audio is empty")
    wav = resample(wav, rate, sample_rate)
    return wav, resample(wav, sample_rate, TOKENIZER_RATE)


class Frontend:
    """The prompt front-end of one model directory (campplus.onnx, speech_tokenizer_v1.onnx)."""

    def __init__(self, model_dir, mel: MelConfig | None = None, providers=None, threads: int | None = None):
        self.model_dir = Path(model_dir)
        self.mel = mel or MelConfig()
        self.tokenizer = SpeechTokenizer(self.model_dir / "speech_tokenizer_v1.onnx", providers, threads)
        self.campplus = open_session(self.model_dir / CAMPPLUS.file, CAMPPLUS, providers, threads)
        self._cache: dict = {}

    def speech_tokens(self, wavs: list, batch_size: int = 8) -> list:
        """25 Hz tokens of 16 kHz waveforms (each (N,) or (1, N), at most 30 s) -> list of (n,) int64."""
        return self.tokenizer(wavs, batch_size=batch_size)

    def speaker_embedding(self, wav_16k: torch.Tensor) -> np.ndarray:
        """campplus x-vector (192,) of a 16 kHz waveform."""
        # upstream calls kaldi.fbank on the [-1, 1] waveform; features.fbank scales by 2^15 first
        # (WeNet's convention), so undo that here: both are exact powers of two
        feat = fbank(wav_16k.reshape(1, -1) / float(1 << 15), TOKENIZER_RATE, num_mel_bins=80, dither=0.0)
        if feat.size(0) == 0:
            raise ValueError(f"audio of {wav_16k.numel()} samples is shorter than one fbank frame (25 ms)")
        feat = feat - feat.mean(dim=0, keepdim=True)
        name = self.campplus.get_inputs()[0].name
        out = self.campplus.run(None, {name: feat[None].numpy().astype(np.float32)})[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def prompt_from_audio(self, wav: torch.Tensor, wav_16k: torch.Tensor, where: str = "prompt") -> SpeakerPrompt:
        seconds = wav_16k.numel() / TOKENIZER_RATE
        if seconds > MAX_SECONDS:
            raise ValueError(f"{where}: prompt is {seconds:.2f} s long; the speech tokenizer takes at most "
                             f"{MAX_SECONDS} s (cut the prompt)")
        try:
            return SpeakerPrompt(prompt_mel(wav, self.mel), self.tokenizer([wav_16k])[0],
                                 self.speaker_embedding(wav_16k))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e

    def prompt_from_wav(self, path) -> SpeakerPrompt:
        """The SpeakerPrompt of an audio file, computed once per (path, size, mtime)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: prompt audio does not exist")
        stat = os.stat(path)
        key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._cache:
            wav, wav_16k = load_prompt_audio(path, self.mel.sample_rate)
            self._cache[key] = self.prompt_from_audio(wav, wav_16k, where=os.fspath(path))
        return self._cache[key]
