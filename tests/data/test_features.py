import math

import numpy as np
import pytest
import torch

from osum_echat.data import features


def test_log_mel_matches_openai_whisper_on_published_audio(shared_dir):
    import whisper
    wav, rate = features.decode_audio(str(shared_dir / "upstream_fake_data/raw/wav/random.wav"))
    assert rate == 24000
    audio = features.resample(wav, rate, 16000)
    ours = features.log_mel(audio)
    ref = whisper.log_mel_spectrogram(audio[0], n_mels=80).T
    assert ours.shape == ref.shape == (audio.size(1) // 160, 80)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_log_mel_matches_openai_whisper_on_tone_and_silence():
    import whisper
    t = torch.arange(8000) / 16000
    for audio in (0.5 * torch.sin(2 * math.pi * 440 * t), torch.zeros(8000)):
        torch.testing.assert_close(features.log_mel(audio[None]),
                                   whisper.log_mel_spectrogram(audio, n_mels=80).T, atol=1e-5, rtol=0)


@pytest.mark.parametrize("orig", [8000, 22050, 24000, 44100, 48000])
def test_resample_keeps_a_tone_and_the_length_rule(orig):
    n = orig // 2
    t = torch.arange(n, dtype=torch.float64) / orig
    wav = torch.sin(2 * math.pi * 300 * t).float()[None]
    out = features.resample(wav, orig, 16000)
    assert out.shape == (1, math.ceil(n * 16000 / orig))
    t2 = torch.arange(out.size(1), dtype=torch.float64) / 16000
    expected = torch.sin(2 * math.pi * 300 * t2).float()
    # away from the edges the windowed sinc reproduces the tone closely
    assert (out[0, 200:-200] - expected[200:-200]).abs().max() < 5e-3


def test_decode_audio_cuts_segments_and_mixes_channels(tmp_path, wav_writer):
    path = wav_writer(tmp_path / "st.wav", seconds=1.0, rate=8000, channels=2)
    wav, rate = features.decode_audio(str(path))
    assert rate == 8000 and wav.shape == (1, 8000)
    seg, _ = features.decode_audio(str(path), 0.25, 0.5)
    assert seg.shape == (1, 2000)
    torch.testing.assert_close(seg, wav[:, 2000:4000])
    data = path.read_bytes()
    from_bytes, _ = features.decode_audio(data)
    torch.testing.assert_close(from_bytes, wav)


@pytest.mark.parametrize("n_mels,n_fft,rate", [(80, 400, 16000), (128, 400, 16000), (40, 512, 8000)])
def test_mel_filters_match_librosa(n_mels, n_fft, rate):
    import librosa
    ref = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels)
    np.testing.assert_allclose(features.mel_filters(n_mels, n_fft, rate).numpy(), ref, atol=1e-7, rtol=0)


def test_fbank_frames_and_tone_peak():
    rate = 16000
    t = torch.arange(rate, dtype=torch.float64) / rate
    tone = (0.3 * torch.sin(2 * math.pi * 1000 * t)).float()[None]
    feat = features.fbank(tone, rate, num_mel_bins=40)
    assert feat.shape == (1 + (rate - 400) // 160, 40) and torch.isfinite(feat).all()
    mel = lambda f: 1127 * math.log(1 + f / 700)  # noqa: E731  Kaldi's mel scale
    step = (mel(rate / 2) - mel(20)) / 41
    expected_bin = round((mel(1000) - mel(20)) / step) - 1
    assert abs(int(feat.mean(0).argmax()) - expected_bin) <= 1
    assert features.fbank(tone[:, :300], rate).shape == (0, 80)  # shorter than one frame
