"""A deterministic stand-in for the 25 Hz CosyVoice speech tokenizer (demo only).

The real OSUM-EChat speech tokens come from the CosyVoice-300M-25Hz tokenizer,
which cannot be downloaded here. For the CPU demo we need *some* 25 Hz integer
tokens that depend on the audio, so this module hashes log-mel frames taken
every 40 ms with fixed, seeded random hyperplanes (one bit per plane). The tokens carry coarse
spectral information (similar sounds share most hash bits) but they are NOT
compatible with CosyVoice token2wav: a model trained on them can only be
checked for learning, not listened to.
"""
import argparse

import librosa
import numpy as np

TOKEN_RATE_HZ = 25
SAMPLE_RATE = 16000
NUM_MELS = 40


class DemoSpeechTokenizer:
    """Hashes normalised 40 ms log-mel frames into codebook_size codes."""

    def __init__(self, codebook_size: int, seed: int = 25):
        if codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {codebook_size}")
        rng = np.random.default_rng(seed)
        self.codebook_size = codebook_size
        num_bits = int(np.ceil(np.log2(codebook_size)))
        self.planes = rng.standard_normal((NUM_MELS, num_bits)).astype(np.float32)
        self.hop = SAMPLE_RATE // TOKEN_RATE_HZ

    def __call__(self, audio: np.ndarray, sample_rate: int) -> list:
        if sample_rate != SAMPLE_RATE:
            audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=SAMPLE_RATE)
        mel = librosa.feature.melspectrogram(y=audio, sr=SAMPLE_RATE, n_fft=2 * self.hop,
                                             hop_length=self.hop, n_mels=NUM_MELS)
        frames = np.log(mel + 1e-6).T  # (T, NUM_MELS)
        frames = (frames - frames.mean(axis=0)) / (frames.std(axis=0) + 1e-5)
        bits = (frames @ self.planes) > 0
        codes = (bits * (1 << np.arange(bits.shape[1]))).sum(axis=1)
        return (codes % self.codebook_size).astype(int).tolist()


def main():
    import soundfile as sf
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wav")
    parser.add_argument("--codebook_size", type=int, default=64)
    args = parser.parse_args()
    audio, sr = sf.read(args.wav, dtype="float32")
    print(DemoSpeechTokenizer(args.codebook_size)(audio, sr))


if __name__ == "__main__":
    main()
