"""Speaker-prompt front-end on the tiny exported ONNX models: features against independent
re-implementations of spec §5, ONNX signatures, determinism, batching, SpeakerPrompt files."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile
import torch

from osum_echat.data import features
from osum_echat.token2wav import frontend as fe
from osum_echat.token2wav.frontend import Frontend, SpeakerPrompt
from osum_echat.token2wav.onnx_models import CAMPPLUS, SPEECH_TOKENIZER, open_session
from osum_echat.token2wav.speech_tokenizer import SpeechTokenizer, features as token_features
from osum_echat.token2wav.tiny_onnx import write_tiny_onnx


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_frontend")
    write_tiny_onnx(out)
    return out


@pytest.fixture(scope="module")
def front(tiny_dir):
    return Frontend(tiny_dir, threads=1)


def speechlike(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A gliding, amplitude-modulated tone plus noise: frames differ, so codes differ."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    f0 = 150 + 100 * np.sin(2 * np.pi * 0.7 * t)
    wav = 0.4 * np.sin(2 * np.pi * np.cumsum(f0) / rate) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (wav + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


# ----------------------------------------------------------------------------- reference features

def ref_prompt_mel(wav: np.ndarray) -> np.ndarray:
    """Spec §5 written out with numpy + librosa: reflect pad 384, periodic Hann 1024, hop 256,
    |X| = sqrt(re^2 + im^2 + 1e-9), librosa Slaney mel 0..8 kHz, ln(max(x, 1e-5))."""
    import librosa

    y = np.pad(wav.astype(np.float64), (384, 384), mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)
    frames = np.stack([y[i:i + 1024] * window for i in range(0, len(y) - 1024 + 1, 256)])
    spec = np.fft.rfft(frames, axis=1)
    mag = np.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)
    basis = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=8000)
    return np.log(np.maximum(mag @ basis.T.astype(np.float64), 1e-5))


def ref_kaldi_fbank(wav: np.ndarray, rate: int = 16000) -> np.ndarray:
    """torchaudio.compliance.kaldi.fbank(wav, num_mel_bins=80, dither=0, sample_frequency=rate) of a
    [-1, 1] waveform, from Kaldi's definition: 25/10 ms frames (snip_edges), DC removal, pre-emphasis
    0.97 (first sample against itself), povey window, 512-point power spectrum, 80 triangular
    mel bins 20 Hz..Nyquist on 1127 ln(1 + f/700), log floored at float32 eps."""
    size, shift, nfft = 400, 160, 512
    n = 1 + (len(wav) - size) // shift
    frames = np.stack([wav[i * shift:i * shift + size] for i in range(n)]).astype(np.float64)
    frames -= frames.mean(axis=1, keepdims=True)
    frames = frames - 0.97 * np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames *= (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(size) / (size - 1))) ** 0.85
    power = np.abs(np.fft.rfft(frames, n=nfft, axis=1)) ** 2

    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)
    lo, hi = mel(20.0), mel(rate / 2)
    centers = lo + (hi - lo) / 81 * np.arange(82)
    bin_mel = mel(np.arange(nfft // 2 + 1) * rate / nfft)
    banks = np.zeros((80, nfft // 2 + 1))
    for m in range(80):
        left, center, right = centers[m], centers[m + 1], centers[m + 2]
        up = (bin_mel - left) / (center - left)
        down = (right - bin_mel) / (right - center)
        banks[m] = np.maximum(0.0, np.minimum(up, down))
    banks[:, -1] = 0.0  # Kaldi leaves out the Nyquist bin
    return np.log(np.maximum(power @ banks.T, np.finfo(np.float32).eps))


def test_prompt_mel_matches_spec_reference():
    wav = speechlike(1.3, 22050)
    ours = fe.prompt_mel(torch.from_numpy(wav))
    ref = ref_prompt_mel(wav)
    assert ours.shape == (len(wav) // 256, 80) == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_mel_config_from_the_yaml_arguments():
    conf = fe.MelConfig.from_dict({"n_fft": 1024, "num_mels": 80, "sampling_rate": 22050, "hop_size": 256,
                                   "win_size": 1024, "fmin": 0, "fmax": 8000, "center": False})
    assert conf == fe.MelConfig()
    assert fe.MelConfig.from_dict({"sampling_rate": object(), "hop_size": 128}).hop_size == 128
    with pytest.raises(ValueError, match="center=True"):
        fe.MelConfig.from_dict({"center": True})


def test_mel_filters_with_fmax_match_librosa():
    import librosa

    ref = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=8000)
    np.testing.assert_allclose(features.mel_filters(80, 1024, 22050, 0.0, 8000.0).numpy(), ref, atol=1e-7, rtol=0)


def test_fbank_as_upstream_calls_kaldi():
    wav = speechlike(0.8, 16000, seed=3)
    wav[4000:5000] = 0.0  # digital silence hits the log floor
    ours = features.fbank(torch.from_numpy(wav) / 32768.0, 16000, num_mel_bins=80, dither=0.0).numpy()
    ref = ref_kaldi_fbank(wav)
    assert ours.shape == ref.shape == (1 + (len(wav) - 400) // 160, 80)
    np.testing.assert_allclose(ours, ref, atol=5e-4, rtol=0)
    np.testing.assert_allclose(ours - ours.mean(0), ref - ref.mean(0), atol=5e-4, rtol=0)


def test_tokenizer_features_are_whisper_128_bin_log_mel():
    import whisper

    wav = speechlike(1.1, 16000, seed=5)
    ref = whisper.log_mel_spectrogram(torch.from_numpy(wav), n_mels=128).numpy()
    np.testing.assert_allclose(token_features(torch.from_numpy(wav)), ref, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- ONNX files

def test_tiny_onnx_has_the_official_signatures(tiny_dir):
    import onnxruntime as ort

    s = ort.InferenceSession(str(tiny_dir / SPEECH_TOKENIZER.file), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, len(i.shape)) for i in s.get_inputs()] == [
        ("feats", "tensor(float)", 3), ("feats_length", "tensor(int32)", 1)]
    assert [(o.name, len(o.shape)) for o in s.get_outputs()] == [("indices", 3)]
    assert s.get_inputs()[0].shape[1] == 128 and isinstance(s.get_inputs()[0].shape[2], str)  # dynamic frames
    c = ort.InferenceSession(str(tiny_dir / CAMPPLUS.file), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape[2]) for i in c.get_inputs()] == [("input", "tensor(float)", 80)]
    assert [(o.name, o.shape[1]) for o in c.get_outputs()] == [("output", 192)]


def test_wrong_signature_missing_and_broken_files_are_one_clear_error(tiny_dir, tmp_path):
    swapped = tmp_path / SPEECH_TOKENIZER.file
    shutil.copy(tiny_dir / CAMPPLUS.file, swapped)
    with pytest.raises(ValueError, match=r"speech_tokenizer_v1\.onnx.*wrong ONNX signature.*'feats'"):
        open_session(swapped, SPEECH_TOKENIZER)
    (tmp_path / "only_tokenizer").mkdir()
    shutil.copy(tiny_dir / SPEECH_TOKENIZER.file, tmp_path / "only_tokenizer")
    with pytest.raises(FileNotFoundError, match=r"only_tokenizer/campplus\.onnx: missing"):
        Frontend(tmp_path / "only_tokenizer")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / SPEECH_TOKENIZER.file).write_bytes(b"not onnx")
    with pytest.raises(ValueError, match=r"junk/speech_tokenizer_v1\.onnx: not a loadable ONNX model"):
        SpeechTokenizer(tmp_path / "junk" / SPEECH_TOKENIZER.file)


# ----------------------------------------------------------------------------- tokens, prompts

def test_tokens_deterministic_25_per_second_and_batched_equals_one_by_one(front, tiny_dir):
    wavs = [torch.from_numpy(speechlike(s, 16000, seed=i)) for i, s in enumerate((1.0, 0.37, 2.2, 0.05))]
    one_by_one = [front.speech_tokens([w])[0] for w in wavs]
    batched = front.speech_tokens(wavs, batch_size=4)
    again = Frontend(tiny_dir, threads=1).speech_tokens(wavs, batch_size=3)
    for a, b, c, w in zip(one_by_one, batched, again, wavs):
        assert a.dtype == np.int64 and np.array_equal(a, b) and np.array_equal(a, c)
        assert len(a) == -(-(w.numel() // 160) // 4)  # ceil(frames / 4): 25 codes per second
    assert len(set(one_by_one[2].tolist())) > 5  # codes follow the audio, not a constant
    assert front.tokenizer.check_batching([token_features(w) for w in wavs])
    assert all(((c >= 0) & (c < 4096)).all() for c in batched)


def test_prompt_from_wav_shapes_cache_and_resampling(front, tmp_path):
    path = tmp_path / "p48k.wav"
    soundfile.write(path, speechlike(1.5, 48000), 48000, subtype="PCM_16")
    prompt = front.prompt_from_wav(path)
    assert prompt.prompt_mel.shape == (int(1.5 * 22050) // 256, 80) and prompt.prompt_mel.dtype == np.float32
    assert prompt.prompt_tokens.shape == (int(1.5 * 25) + 1,) and prompt.spk_embedding.shape == (192,)
    assert front.prompt_from_wav(path) is prompt  # computed once
    # the 16 kHz copy comes from the 22,050 Hz one (upstream's order), not from the file
    wav22, wav16 = fe.load_prompt_audio(path)
    np.testing.assert_array_equal(prompt.prompt_tokens, front.speech_tokens([wav16])[0])
    np.testing.assert_allclose(prompt.prompt_mel, fe.prompt_mel(wav22), rtol=0, atol=0)
    low = tmp_path / "p16k.wav"  # upstream refuses < 22,050 Hz; resampled up here
    soundfile.write(low, speechlike(1.0, 16000), 16000)
    assert front.prompt_from_wav(low).prompt_mel.shape == (22050 // 256, 80)


def test_prompt_over_30_seconds_and_too_short_are_clear_errors(front, tmp_path):
    long = tmp_path / "long.wav"
    soundfile.write(long, np.zeros(int(30.5 * 22050), dtype=np.float32) + 0.01, 22050)
    with pytest.raises(ValueError, match=r"long\.wav: prompt is 30\.50 s long.*at most 30 s"):
        front.prompt_from_wav(long)
    short = tmp_path / "short.wav"
    soundfile.write(short, np.full(100, 0.1, dtype=np.float32), 22050)
    with pytest.raises(ValueError, match=r"short\.wav: .*too short"):
        front.prompt_from_wav(short)


def test_speaker_prompt_round_trip_and_zero_length(tmp_path, front):
    rng = np.random.default_rng(0)
    prompt = SpeakerPrompt(rng.standard_normal((37, 80)), rng.integers(0, 4096, 11), rng.standard_normal(192))
    loaded = SpeakerPrompt.load(prompt.save(tmp_path / "p"))
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(SpeakerPrompt.FILES)
    for name, dtype in (("prompt_mel", np.float32), ("prompt_tokens", np.int64), ("spk_embedding", np.float32)):
        assert getattr(loaded, name).dtype == dtype
        np.testing.assert_array_equal(getattr(loaded, name), getattr(prompt, name))
    empty = SpeakerPrompt(np.zeros((0, 80)), np.zeros(0, dtype=np.int64), prompt.spk_embedding)
    back = SpeakerPrompt.load(empty.save(tmp_path / "e"))
    assert back.prompt_mel.shape == (0, 80) and back.prompt_tokens.shape == (0,)
    real = front.prompt_from_audio(*map(torch.from_numpy, (speechlike(1.0, 22050), speechlike(1.0, 16000))))
    again = SpeakerPrompt.load(real.save(tmp_path / "r"))
    np.testing.assert_array_equal(again.prompt_tokens, real.prompt_tokens)


def test_speaker_prompt_bad_files_name_the_problem(tmp_path):
    good = SpeakerPrompt(np.zeros((3, 80)), [1, 2], np.zeros(192))
    good.save(tmp_path)
    (tmp_path / "spk_embedding.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"spk_embedding\.npy: missing.*save-prompt"):
        SpeakerPrompt.load(tmp_path)
    np.save(tmp_path / "spk_embedding.npy", np.zeros(64, dtype=np.float32))
    with pytest.raises(ValueError, match=r"spk_embedding must have shape \(192,\), got \(64,\)"):
        SpeakerPrompt.load(tmp_path)
    with pytest.raises(ValueError, match=r"prompt_tokens\[1\] = -3 is negative"):
        SpeakerPrompt(np.zeros((3, 80)), [1, -3], np.zeros(192))
    with pytest.raises(ValueError, match=r"prompt_mel must have shape \(frames, 80\)"):
        SpeakerPrompt(np.zeros((3, 64)), [1], np.zeros(192))
