"""PCM16 on the wire: base64 <-> samples, and soxr resampling between the wire rate and the model's.

The OpenAI Realtime API carries `audio/pcm` at 24,000 Hz (the only rate its types allow); the
encoder reads 16 kHz and token2wav writes 22,050 Hz. A session may declare another wire rate with
this server's extension fields session.osum.input_rate / output_rate (EXTENSION_RATES).
"""
from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import soundfile
import soxr

OUTPUT_RATE = 24000  # audio/pcm in OpenAI's types
WIRE_RATES = (24000,)
# the extension session.osum.input_rate / output_rate: PCM16 at another rate (a phone line, a 48 kHz card)
EXTENSION_RATES = (8000, 16000, 22050, 24000, 44100, 48000)


class AudioInputError(ValueError):
    """Bad audio on the wire; `code` is the error code sent back."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def decode_pcm16(data) -> np.ndarray:
    """base64 PCM16 little-endian mono -> int16 samples."""
    if not isinstance(data, str):
        raise AudioInputError("invalid_audio", "audio must be a base64 string of PCM16 samples")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise AudioInputError("invalid_base64", "audio is not valid base64") from None
    if len(raw) % 2:
        raise AudioInputError("invalid_audio_length", f"audio has {len(raw)} bytes: PCM16 needs an even count")
    return np.frombuffer(raw, dtype="<i2")


def encode_pcm16(samples: np.ndarray) -> str:
    """float samples in [-1, 1] -> base64 PCM16 little-endian."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    return base64.b64encode(pcm.tobytes()).decode("ascii")


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    samples = np.asarray(samples, dtype=np.float32)
    if rate_in == rate_out or not len(samples):
        return samples
    return soxr.resample(samples, rate_in, rate_out).astype(np.float32)


def to_pcm16_24k(samples: np.ndarray, rate: int) -> bytes:
    pcm = (np.clip(resample(samples, rate, OUTPUT_RATE), -1.0, 1.0) * 32767.0).round().astype("<i2")
    return pcm.tobytes()


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """A float WAV file in memory (what the pipeline reads as uploaded audio)."""
    buf = io.BytesIO()
    soundfile.write(buf, np.asarray(samples, dtype=np.float32), rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


class StreamResampler:
    """Chunks of one stream (a response's audio windows, a client's appends) resampled as one signal:
    soxr's stream keeps its state across chunks (the same samples as resampling the whole at once)."""

    def __init__(self, rate_in: int, rate_out: int = OUTPUT_RATE):
        self.same = rate_in == rate_out
        self.stream = None if self.same else soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32")

    def __call__(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32)
        if self.same:
            return samples
        return self.stream.resample_chunk(samples, last=last)
