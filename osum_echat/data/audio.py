"""Audio stages: decode, resample, features, spectrogram augmentation."""
from __future__ import annotations

import functools
import os

import torch

from . import features
from .data_index import DeferredWav

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


def _decode_main(sample, audio, index):
    """The main audio, decoded; or while a resumed run seeks, a DeferredWav or the recorded verdict of an
    audio the data index knows (data/data_index.py: the facts of every decode are recorded there)."""
    start, end, relabel = sample.get("start"), sample.get("end"), sample.get("upstream_rate_of")
    if relabel is not None or index is None:
        wav, rate, err = _decode(audio, start, end)
        if not err and relabel is not None:
            wav, rate, err = _history_turn_like_upstream(wav, rate, relabel)
        return wav, rate, err
    aid = index.audio_id(audio, start, end, sample.get("key"))
    known = index.known_audio(audio, start, end, aid)
    if isinstance(known, DeferredWav):
        return known, known.rate, None
    if known is not None:
        return None, None, known
    wav, rate, err = _decode(audio, start, end)
    index.add_audio(aid, wav, rate, err)
    return wav, rate, err


def load_audio(samples, counter, index=None):
    """Decode the audio of speech-input tasks (and their history turns); text-only tasks carry none.
    index (data/data_index.py, train mode): main audios are looked up / recorded there."""
    for sample in samples:
        key, src = sample.get("key"), sample.get("src", "?")
        audio = sample.pop("audio", None)
        if not sample["spec"].speech_input:
            sample["wav"], sample["sample_rate"] = None, None
        else:
            if audio is None:
                counter.skip("missing_audio", src, key, f"task {sample['task']} needs audio and the sample has none")
                continue
            wav, rate, err = _decode_main(sample, audio, index)
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


class LazyFeat:
    """Features of one sample computed only when its batch is padded (train mode, data/dataset.py).

    Its shape is known from the audio length alone, so filters, sort and dynamic batching decide as
    on the real tensor, and spec_aug/sub/trim draw their random numbers at their place in the stream
    and record what to do. A resumed run passes over the batches already trained on without
    computing resampling, features or augmentation for them (instant resume), and every other batch
    gets exactly the tensor the eager pipeline computes. Cost: a sample waiting in the shuffle/sort
    buffers holds its decoded waveform at the source rate (4 bytes a sample) rather than its
    log-mel (80 floats per 160 samples: 2 bytes a sample at 16 kHz); the audio is decoded once.
    """

    def __init__(self, make, frames: int, bins: int):
        self.make, self.ops = make, []
        self.shape = self.predicted = torch.Size((frames, bins))

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def materialize(self) -> torch.Tensor:
        feat = self.make()
        if feat.shape != self.predicted:
            raise RuntimeError(f"features of shape {tuple(feat.shape)}, predicted {tuple(self.predicted)}: "
                               "the length rule in data/features.py disagrees with the feature code")
        for op in self.ops:
            feat = op(feat)
        return feat


def materialize(samples: list) -> list:
    """Deferred fields (LazyFeat features, data_index.DeferredIds label and prompt) computed."""
    for sample in samples:
        for name in ("feat", "label", "prompt"):
            if hasattr(sample.get(name), "materialize"):
                sample[name] = sample[name].materialize()
    return samples


def _augment(sample, op, frames_after=None):
    """Apply `op` to the features now, or record it on lazy features (with their new frame count)."""
    feat = sample["feat"]
    if isinstance(feat, LazyFeat):
        feat.ops.append(op)
        if frames_after is not None:
            feat.shape = torch.Size((frames_after, feat.shape[1]))
    else:
        sample["feat"] = op(feat)


def resample_audio(samples, resample_rate: int = 16000, lazy: bool = False):
    """Lazy (the main audio only): the rate is recorded in `_resample_from` and done with the features."""
    for sample in samples:
        if sample.get("wav") is not None and sample["sample_rate"] != resample_rate:
            if lazy:
                sample["_resample_from"] = sample["sample_rate"]
            else:
                sample["wav"] = features.resample(sample["wav"], sample["sample_rate"], resample_rate)
            sample["sample_rate"] = resample_rate
        for turn in sample.get("history") or []:
            if turn["sample_rate"] != resample_rate:
                turn["wav"] = features.resample(turn["wav"], turn["sample_rate"], resample_rate)
                turn["sample_rate"] = resample_rate
        yield sample


def compute_features(samples, counter, *, feats_type="log_mel_spectrogram", n_fft=400, hop_length=160,
                     num_mel_bins=80, padding=0, fbank_conf=None, lazy: bool = False):
    """Lazy: the main audio's features become a LazyFeat (history turns are computed now)."""
    def feat_of(wav, rate):
        if feats_type == "fbank":
            return features.fbank(wav, rate, **(fbank_conf or {}))
        return features.log_mel(wav, n_fft, hop_length, num_mel_bins, padding, rate)

    def lazy_feat(wav, rate, orig_rate):
        length = wav.size(1) if orig_rate is None else features.resampled_length(wav.size(1), orig_rate, rate)
        if feats_type == "fbank":
            frames = features.fbank_frames(length, rate, **(fbank_conf or {}))
        else:
            frames = features.log_mel_frames(length, hop_length, padding)

        def make():
            w = wav.load() if isinstance(wav, DeferredWav) else wav
            w = w if orig_rate is None else features.resample(w, orig_rate, rate)
            return feat_of(w, rate)
        return LazyFeat(make, frames, (fbank_conf or {}).get("num_mel_bins", 80) if feats_type == "fbank"
                        else num_mel_bins), length

    for sample in samples:
        key, src = sample.get("key"), sample.get("src", "?")
        wav, orig_rate = sample.pop("wav"), sample.pop("_resample_from", None)
        num_samples = 0
        if wav is None:
            sample["feat"] = torch.zeros(0, num_mel_bins)
        else:
            if lazy:
                sample["feat"], num_samples = lazy_feat(wav, sample["sample_rate"], orig_rate)
            else:
                sample["feat"], num_samples = None, wav.size(1)
            if num_samples < n_fft:
                counter.skip("empty_audio", src, key, f"{num_samples} samples: shorter than one frame ({n_fft})")
                continue
            if not lazy:
                sample["feat"] = feat_of(wav, sample["sample_rate"])
            if sample["feat"].size(0) == 0:
                counter.skip("empty_audio", src, key, "audio gives zero feature frames")
                continue
        sample["num_samples"] = num_samples
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
        frames, bins = sample["feat"].size()
        if frames > 0:
            spans = []
            for size, num, most in ((frames, num_t_mask, max_t), (bins, num_f_mask, max_f)):
                for _ in range(num):
                    start = rng.randint(0, size - 1)
                    spans.append((len(spans) < num_t_mask, start, min(size, start + rng.randint(1, most))))
            _augment(sample, functools.partial(_mask, spans=spans))
        yield sample


def _mask(x, spans):
    y = x.clone()
    for in_time, start, end in spans:
        if in_time:
            y[start:end, :] = 0
        else:
            y[:, start:end] = 0
    return y


def spec_sub(samples, rng, max_t=20, num_t_sub=3):
    for sample in samples:
        frames = sample["feat"].size(0)
        if frames > 0:
            subs = []
            for _ in range(num_t_sub):
                start = rng.randint(0, frames - 1)
                end = min(frames, start + rng.randint(1, max_t))
                subs.append((start, end, rng.randint(0, start)))
            _augment(sample, functools.partial(_substitute, subs=subs))
        yield sample


def _substitute(x, subs):
    y = x.clone()
    for start, end, shift in subs:
        y[start:end, :] = x[start - shift:end - shift, :]
    return y


def spec_trim(samples, rng, max_t=20):
    for sample in samples:
        frames = sample["feat"].size(0)
        if frames > 0:
            length = rng.randint(1, max_t)
            if length < frames / 2:
                _augment(sample, lambda x, n=frames - length: x[:n].clone(), frames_after=frames - length)
        yield sample
