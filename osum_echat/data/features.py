"""Audio decoding, resampling and acoustic features.

`log_mel` reproduces openai-whisper's `log_mel_spectrogram` (80 bins, n_fft 400,
hop 160, Whisper's clamp-to-max-8 and (x+4)/4 normalisation), which is what
upstream computes; `resample` reproduces torchaudio's default windowed-sinc
resampler (what upstream uses) with plain torch ops, and `fbank` Kaldi's
filterbank (upstream's option, torchaudio.compliance.kaldi.fbank's defaults),
so no torchaudio is needed.
"""
from __future__ import annotations

import functools
import io
import math

import numpy as np
import soundfile
import torch
import torch.nn.functional as F

AUDIO_SUFFIXES = frozenset(["flac", "mp3", "m4a", "ogg", "opus", "wav", "wma"])


def decode_audio(source, start: float | None = None, end: float | None = None):
    """Read mono float32 audio from a path or bytes -> (waveform (1, N) tensor, sample_rate).

    `start`/`end` (seconds) cut a segment without reading the rest. Multi-channel
    audio is averaged to mono, as upstream does.
    """
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    with soundfile.SoundFile(handle) as f:
        sample_rate = f.samplerate
        if start is not None:
            first = int(start * sample_rate)
            last = int(end * sample_rate) if end is not None else f.frames
            f.seek(first)
            data = f.read(max(0, last - first), dtype="float32", always_2d=True)
        else:
            data = f.read(dtype="float32", always_2d=True)
    wav = torch.from_numpy(np.ascontiguousarray(data.T))
    if wav.size(0) > 1:
        wav = wav.mean(dim=0, keepdim=True)
    return wav, sample_rate


def audio_sample_rate(source) -> int:
    """Sample rate from the header of a path or bytes, without decoding the audio."""
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    with soundfile.SoundFile(handle) as f:
        return f.samplerate


@functools.lru_cache(maxsize=8)
def _sinc_kernel(orig: int, new: int, width_zeros: int = 6, rolloff: float = 0.99):
    """Hann-windowed sinc polyphase kernel, torchaudio's default resampler."""
    base = min(orig, new) * rolloff
    width = math.ceil(width_zeros * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float32)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float32)[:, None, None] / new + idx
    t = (t * base).clamp(-width_zeros, width_zeros)
    window = torch.cos(t * math.pi / width_zeros / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    kernel = (sinc * window * (base / orig)).to(torch.float32)
    return kernel, width


def resample(wav: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """(C, N) waveform at orig_rate -> (C, M) at new_rate, M = ceil(N * new / orig)."""
    if orig_rate == new_rate:
        return wav
    gcd = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // gcd, int(new_rate) // gcd
    kernel, width = _sinc_kernel(orig, new)
    channels, length = wav.shape
    padded = F.pad(wav.reshape(channels, 1, length), (width, width + orig))
    out = F.conv1d(padded, kernel.to(wav.dtype), stride=orig)  # (C, new, frames)
    out = out.transpose(1, 2).reshape(channels, -1)
    return out[:, : math.ceil(new * length / orig)]


def resampled_length(length: int, orig_rate: int, new_rate: int) -> int:
    """Samples `resample` returns for `length` input samples."""
    if orig_rate == new_rate:
        return length
    gcd = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // gcd, int(new_rate) // gcd
    return math.ceil(new * length / orig)


def log_mel_frames(length: int, hop_length: int = 160, padding: int = 0) -> int:
    """Frames `log_mel` returns for `length` samples (centred STFT, the last frame dropped)."""
    return (length + max(0, padding)) // hop_length


def fbank_frames(length: int, sample_rate: int = 16000, frame_length: float = 25, frame_shift: float = 10,
                 **unused) -> int:
    """Frames `fbank` returns for `length` samples (snip_edges)."""
    size, shift = int(sample_rate * frame_length / 1000), int(sample_rate * frame_shift / 1000)
    return 0 if length < size else 1 + (length - size) // shift


def _hz_to_mel(f):
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


@functools.lru_cache(maxsize=8)
def mel_filters(n_mels: int = 80, n_fft: int = 400, sample_rate: int = 16000, fmin: float = 0.0,
                fmax: float | None = None) -> torch.Tensor:
    """Slaney-normalised triangular mel filterbank (n_mels, n_fft // 2 + 1), the filters Whisper
    ships (librosa.filters.mel's defaults; fmax None = sample_rate / 2), computed here so workers
    need not import librosa."""
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    fmax = sample_rate / 2.0 if fmax is None else fmax
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None].astype(np.float32)
    return torch.from_numpy(weights)


_WINDOWS: dict = {}


def log_mel(wav: torch.Tensor, n_fft: int = 400, hop_length: int = 160, num_mel_bins: int = 80,
            padding: int = 0, sample_rate: int = 16000) -> torch.Tensor:
    """Whisper log-mel of a (1, N) or (N,) 16 kHz waveform -> (frames, num_mel_bins)."""
    audio = wav.reshape(-1)
    if padding > 0:
        audio = F.pad(audio, (0, padding))
    window = _WINDOWS.get(n_fft)
    if window is None:
        window = _WINDOWS[n_fft] = torch.hann_window(n_fft)
    stft = torch.stft(audio, n_fft, hop_length, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = mel_filters(num_mel_bins, n_fft, sample_rate) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).transpose(0, 1)


def _kaldi_mel(freq):
    return 1127.0 * (1.0 + freq / 700.0).log()  # not log1p: torchaudio's float32 rounding


@functools.lru_cache(maxsize=4)
def kaldi_mel_banks(num_bins: int, padded_window: int, sample_rate: float, low_freq: float = 20.0,
                    high_freq: float = 0.0) -> torch.Tensor:
    """Kaldi's triangular mel banks (num_bins, padded_window // 2 + 1); the Nyquist column is 0."""
    nyquist = sample_rate / 2
    high = high_freq if high_freq > 0 else nyquist + high_freq
    # edges in double precision, as Kaldi (and torchaudio's mel_scale_scalar) compute them
    mel_low, mel_high = 1127.0 * math.log(1.0 + low_freq / 700.0), 1127.0 * math.log(1.0 + high / 700.0)
    step = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float32)[:, None]
    left, center, right = mel_low + b * step, mel_low + (b + 1) * step, mel_low + (b + 2) * step
    mel = _kaldi_mel(sample_rate / padded_window * torch.arange(padded_window // 2, dtype=torch.float32))[None]
    banks = torch.clamp(torch.minimum((mel - left) / (center - left), (right - mel) / (right - center)), min=0)
    return F.pad(banks, (0, 1))


def fbank(wav: torch.Tensor, sample_rate: int = 16000, num_mel_bins: int = 80, frame_length: float = 25,
          frame_shift: float = 10, dither: float = 0.0, preemphasis: float = 0.97, low_freq: float = 20.0,
          high_freq: float = 0.0) -> torch.Tensor:
    """Kaldi log-mel filterbank (upstream's `compute_fbank`: int16-scaled input, povey window,
    snip_edges, DC removal, power spectrum, no energy column) -> (frames, num_mel_bins)."""
    audio = wav.reshape(-1).float() * (1 << 15)
    size, shift = int(sample_rate * frame_length / 1000), int(sample_rate * frame_shift / 1000)
    if audio.numel() < size:
        return torch.zeros(0, num_mel_bins)
    frames = audio.unfold(0, size, shift)
    if dither > 0:
        frames = frames + dither * torch.randn_like(frames)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - preemphasis * previous
    frames = frames * torch.hann_window(size, periodic=False).pow(0.85)
    padded = 1 << (size - 1).bit_length()
    power = torch.fft.rfft(F.pad(frames, (0, padded - size))).abs().pow(2)
    mel = power @ kaldi_mel_banks(num_mel_bins, padded, float(sample_rate), low_freq, high_freq).T
    return torch.clamp(mel, min=torch.finfo(torch.float32).eps).log()
