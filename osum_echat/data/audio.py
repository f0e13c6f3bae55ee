"""Audio stages: decode, resample, features, spectrogram augmentation."""
from __future__ import annotations

import os

import torch

from . import features

# upstream's tar reader resamples every history wav to this rate, whatever resample_conf says
UPSTREAM_HISTORY_RATE = 16000


def _decode(audio, start=None, end=None):
    """(wav, rate, None) or (None, None, (reason, detail))."""
    if isinstance(audio, str) and not os.path.exists(audio):
        return None, None, ("missing_file", f"audio file {audio} does not exist")
    try:
        wav, rate = features.decode_audio(audio, start, end)
    except Exception as e:  # soundfile raises several types for unreadable audio
        return None, None, ("bad_audio", f"{type(e).__name__}: {e}")
    if wav.numel() == 0:
        return None, None, ("empty_audio", "audio has no samples")
    if not torch.isfinite(wav.sum()):  # one reduction: NaN/Inf anywhere makes the sum non-finite
        return None, None, ("nan_audio", "audio contains NaN or Inf")
    return wav, rate, None


def _history_turn_like_upstream(wav, rate, main_audio):
    """upstream quirk (see expand_dialogue_prefix): the turn resampled to 16 kHz,
    labelled with the main audio's rate, so resample_audio resamples it again."""
    if rate != UPSTREAM_HISTORY_RATE:
        wav = features.resample(wav, rate, UPSTREAM_HISTORY_RATE)
    if isinstance(main_audio, str) and not os.path.exists(main_audio):
        return None, None, ("missing_file", f"audio file {main_audio} does not exist")
    try:
        return wav, features.audio_sample_rate(main_audio), None
    except Exception as e:  # soundfile raises several types for unreadable audio
        return None, None, ("bad_audio", f"dialogue's main audio: {type(e).__name__}: {e}")


def load_audio(samples, counter):
    """Decode the audio of speech-input tasks (and their history turns); text-only tasks carry none."""
    for sample in samples:
        key, src = sample.get("key"), sample.get("src", "?")
        audio = sample.pop("audio", None)
        if not sample["spec"].speech_input:
            sample["wav"], sample["sample_rate"] = None, None
        else:
            if audio is None:
                counter.skip("missing_audio", src, key, f"task {sample['task']} needs audio and the sample has none")
                continue
            wav, rate, err = _decode(audio, sample.get("start"), sample.get("end"))
            if not err and sample.get("upstream_rate_of") is not None:
                wav, rate, err = _history_turn_like_upstream(wav, rate, sample["upstream_rate_of"])
            if err:
                counter.skip(err[0], src, key, err[1])
                continue
            sample["wav"], sample["sample_rate"] = wav, rate
        sample.pop("upstream_rate_of", None)
        bad, turns = None, []
        for i, turn in enumerate(sample.get("history") or []):
            if turn.get("audio") is None:
                bad = f"history turn {i + 1} has no audio"
                break
            wav, rate, err = _decode(turn["audio"])
            if err:
                bad = f"history turn {i + 1}: {err[1]}"
                break
            turns.append({k: v for k, v in turn.items() if k != "audio"} | {"wav": wav, "sample_rate": rate})
        sample["history"] = turns
        if bad:
            counter.skip("bad_history", src, key, bad)
            continue
        yield sample


def resample_audio(samples, resample_rate: int = 16000):
    for sample in samples:
        if sample.get("wav") is not None and sample["sample_rate"] != resample_rate:
            sample["wav"] = features.resample(sample["wav"], sample["sample_rate"], resample_rate)
            sample["sample_rate"] = resample_rate
        for turn in sample.get("history") or []:
            if turn["sample_rate"] != resample_rate:
                turn["wav"] = features.resample(turn["wav"], turn["sample_rate"], resample_rate)
                turn["sample_rate"] = resample_rate
        yield sample


def compute_features(samples, counter, *, feats_type="log_mel_spectrogram", n_fft=400, hop_length=160,
                     num_mel_bins=80, padding=0, fbank_conf=None):
    def feat_of(wav, rate):
        if feats_type == "fbank":
            return features.fbank(wav, rate, **(fbank_conf or {}))
        return features.log_mel(wav, n_fft, hop_length, num_mel_bins, padding, rate)

    for sample in samples:
        key, src = sample.get("key"), sample.get("src", "?")
        wav = sample.pop("wav")
        if wav is None:
            sample["feat"] = torch.zeros(0, num_mel_bins)
        elif wav.size(1) < n_fft:
            counter.skip("empty_audio", src, key, f"{wav.size(1)} samples: shorter than one frame ({n_fft})")
            continue
        else:
            sample["feat"] = feat_of(wav, sample["sample_rate"])
            if sample["feat"].size(0) == 0:
                counter.skip("empty_audio", src, key, "audio gives zero feature frames")
                continue
        sample["num_samples"] = 0 if wav is None else wav.size(1)
        bad = False
        for turn in sample.get("history") or []:
            twav = turn.pop("wav")
            if twav.size(1) < n_fft:
                bad = True
                break
            turn["feat"] = feat_of(twav, turn["sample_rate"])
        if bad:
            counter.skip("bad_history", src, key, "a history turn is shorter than one frame")
            continue
        yield sample


def spec_aug(samples, rng, num_t_mask=2, num_f_mask=2, max_t=50, max_f=10, max_w=80):
    for sample in samples:
        x = sample["feat"]
        if x.size(0) > 0:
            y = x.clone()
            frames, bins = y.shape
            for _ in range(num_t_mask):
                start = rng.randint(0, frames - 1)
                y[start:min(frames, start + rng.randint(1, max_t)), :] = 0
            for _ in range(num_f_mask):
                start = rng.randint(0, bins - 1)
                y[:, start:min(bins, start + rng.randint(1, max_f))] = 0
            sample["feat"] = y
        yield sample


def spec_sub(samples, rng, max_t=20, num_t_sub=3):
    for sample in samples:
        x = sample["feat"]
        if x.size(0) > 0:
            y = x.clone()
            frames = y.size(0)
            for _ in range(num_t_sub):
                start = rng.randint(0, frames - 1)
                end = min(frames, start + rng.randint(1, max_t))
                shift = rng.randint(0, start)
                y[start:end, :] = x[start - shift:end - shift, :]
            sample["feat"] = y
        yield sample


def spec_trim(samples, rng, max_t=20):
    for sample in samples:
        x = sample["feat"]
        if x.size(0) > 0:
            length = rng.randint(1, max_t)
            if length < x.size(0) / 2:
                sample["feat"] = x[:x.size(0) - length].clone()
        yield sample
