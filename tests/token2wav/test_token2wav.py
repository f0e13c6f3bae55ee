"""Tiny token2wav directory: whole-utterance and streamed synthesis, determinism, lengths, bad input, CLI."""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile
import torch

from osum_echat.bin import token2wav as cli
from osum_echat.token2wav import SpeakerPrompt, Token2Wav
from osum_echat.token2wav.config import tiny_config
from osum_echat.token2wav.streaming import StreamConfig, crossfade
from osum_echat.token2wav.token2wav import ModelDirError, clean_tokens


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_t2w")
    assert cli.main(["make-tiny", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def t2w(tiny_dir):
    return Token2Wav.from_dir(tiny_dir)


def tokens(n, seed=0):
    return torch.randint(0, 4096, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def expected_samples(n_tokens):
    return 256 * math.floor(n_tokens * 22050 / (25 * 256))


def test_tiny_dir_has_the_official_layout(tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"cosyvoice.yaml", "flow.pt", "hift.pt", "campplus.onnx", "speech_tokenizer_v1.onnx"} <= names
    sd = torch.load(tiny_dir / "hift.pt", weights_only=True)
    assert any(k.endswith(".weight_g") for k in sd)          # the 2024 release's weight-norm form


@pytest.mark.parametrize("n", [7, 41, 90])
def test_synthesize_length_rate_and_bit_identical_reruns(t2w, n):
    ids = tokens(n, seed=n)
    wav, mel = t2w.synthesize(ids, noise=False, return_mel=True)
    assert t2w.sample_rate == 22050
    assert wav.dtype == torch.float32 and wav.dim() == 1 and wav.numel() == expected_samples(n)
    assert mel.shape == (80, expected_samples(n) // 256)
    assert torch.isfinite(wav).all() and wav.abs().max() <= 0.99 and wav.std() > 1e-3
    assert torch.equal(wav, t2w.synthesize(ids, noise=False))
    noisy = t2w.synthesize(ids, noise=True)
    assert noisy.shape == wav.shape and not torch.equal(noisy, wav)


def test_noise_is_reproducible_with_a_generator(t2w):
    ids = tokens(30)
    a = t2w.synthesize(ids, generator=torch.Generator().manual_seed(3))
    b = t2w.synthesize(ids, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_prompt_changes_the_output_and_zero_length_prompt_equals_none(t2w):
    ids = tokens(30)
    rng = np.random.default_rng(0)
    empty = SpeakerPrompt(np.zeros((0, 80)), np.zeros(0, dtype=np.int64), np.zeros(192))
    assert torch.equal(t2w.synthesize(ids, empty, noise=False), t2w.synthesize(ids, None, noise=False))
    full = SpeakerPrompt(rng.normal(size=(40, 80)), rng.integers(0, 4096, 12), rng.normal(size=192))
    with_prompt = t2w.synthesize(ids, full, noise=False)
    assert with_prompt.numel() == expected_samples(30)        # the prompt's audio is not in the output
    assert not torch.equal(with_prompt, t2w.synthesize(ids, None, noise=False))


def test_eos_removed_and_bad_tokens_name_position_and_value(t2w):
    assert clean_tokens([5, 6, 4096], 4096) == [5, 6]
    with pytest.raises(ValueError, match=r"position 2 is 5000"):
        t2w.synthesize([1, 2, 5000, 3])
    with pytest.raises(ValueError, match=r"position 0 is -1"):
        t2w.synthesize([-1])
    with pytest.raises(ValueError, match="empty"):
        t2w.synthesize([])
    with pytest.raises(ValueError, match="empty"):
        t2w.synthesize([4096])


def test_prompt_over_30_seconds_is_rejected(t2w):
    long = SpeakerPrompt(np.zeros((30 * 87, 80)), np.zeros(10, dtype=np.int64), np.zeros(192))
    with pytest.raises(ValueError, match="30 s"):
        t2w.synthesize(tokens(5), long)


def test_prompt_token_range_is_the_model_vocab(t2w, tmp_path):
    """The prompt's ids are checked against the flow's vocab_size from cosyvoice.yaml, not a fixed 4096."""
    cfg = tiny_config()
    cfg.flow.vocab_size = 5000
    big = Token2Wav.from_dir(cli.make_tiny(tmp_path / "v5000", cfg=cfg, onnx=False))
    assert big.cfg.flow.vocab_size == 5000
    rng = np.random.default_rng(0)
    prompt = SpeakerPrompt(rng.normal(size=(20, 80)), [3, 4500, 4999], rng.normal(size=192))   # the container
    wav = big.synthesize([4998, 7, 4500], prompt=prompt, noise=False)                          # takes any id >= 0
    assert wav.numel() == expected_samples(3) and torch.isfinite(wav).all()
    with pytest.raises(ValueError, match=r"prompt_tokens\[1\] = 4500 is outside \[0, 4096\)"):
        t2w.synthesize(tokens(5), prompt=prompt)
    prompt.prompt_tokens[2] = 5000
    with pytest.raises(ValueError, match=r"prompt_tokens\[2\] = 5000 is outside \[0, 5000\)"):
        big.synthesize([1, 2], prompt=prompt)


def test_model_dir_missing_file_is_named(tiny_dir, tmp_path):
    (tmp_path / "cosyvoice.yaml").write_text((tiny_dir / "cosyvoice.yaml").read_text())
    (tmp_path / "flow.pt").write_bytes((tiny_dir / "flow.pt").read_bytes())
    with pytest.raises(ModelDirError, match="hift.pt: missing"):
        Token2Wav.from_dir(tmp_path)
    (tmp_path / "hift.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelDirError, match="hift.pt: not a readable"):
        Token2Wav.from_dir(tmp_path)
    torch.save({"conv_pre.weight": torch.zeros(1)}, tmp_path / "hift.pt")
    with pytest.raises(ModelDirError, match="hift.pt: does not match"):
        Token2Wav.from_dir(tmp_path)


def consumed_when_first_packet(t2w, ids, conf):
    seen = []

    def feed():
        for t in ids:
            seen.append(t)
            yield t

    chunks, first_at = [], None
    for c in t2w.stream(feed(), noise=False, config=conf):
        if first_at is None:
            first_at = len(seen)
        chunks.append(c)
    return chunks, first_at


def test_stream_yields_early_same_length_and_deterministic(t2w):
    ids = tokens(120, seed=5)
    conf = StreamConfig(first_chunk=10, hop=20)
    chunks, first_at = consumed_when_first_packet(t2w, ids, conf)
    assert first_at == 10 and len(chunks) >= 4
    wav = torch.cat(chunks)
    assert wav.numel() == expected_samples(120) and torch.isfinite(wav).all()
    again, _ = consumed_when_first_packet(t2w, ids, conf)
    assert torch.equal(torch.cat(again), wav)
    # eos ends the stream; a window that holds everything equals the whole-utterance render
    whole = t2w.synthesize(ids[:30], noise=False)
    single = torch.cat(list(t2w.stream(iter(ids[:30] + [4096, 7]), noise=False, config=StreamConfig(first_chunk=40))))
    assert torch.equal(single, whole)


def test_stream_mel_has_the_whole_length_and_bad_token_is_named(t2w):
    ids = tokens(100, seed=2)
    mel_whole = t2w.synthesize_mel(ids, noise=False)
    parts = []
    list(t2w.stream(iter(ids), noise=False, config=StreamConfig(first_chunk=15, hop=25), mel_out=parts))
    mel = torch.cat(parts, dim=-1)
    assert mel.shape == mel_whole.shape
    with pytest.raises(ValueError, match="position 3 is 9999"):
        list(t2w.stream(iter([1, 2, 3, 9999]), config=StreamConfig(first_chunk=2, hop=2, overlap=1, context=1)))


def test_crossfade_weights_sum_to_one():
    held, new = torch.full((1, 80, 12), 2.0), torch.full((1, 80, 20), 2.0)
    assert torch.allclose(crossfade(held, new), new)


def test_cli_synth_whole_stream_pcm16_mel_and_prompt_dir(tiny_dir, tmp_path, capsys):
    ids = " ".join(map(str, tokens(50)))
    out = tmp_path / "a.wav"
    assert cli.main(["synth", "--model_dir", str(tiny_dir), "--tokens", ids, "--output", str(out), "--no_noise",
                     "--save_mel", str(tmp_path / "a.npy")]) == 0
    wav, rate = soundfile.read(out, dtype="float32")
    info = soundfile.info(out)
    assert rate == 22050 and info.subtype == "PCM_16" and wav.shape == (expected_samples(50),)
    assert np.load(tmp_path / "a.npy").shape == (80, expected_samples(50) // 256)
    assert cli.main(["synth", "--model_dir", str(tiny_dir), "--tokens", ids, "--output", str(tmp_path / "b.wav"),
                     "--stream", "--pcm16"]) == 0
    assert soundfile.info(tmp_path / "b.wav").subtype == "PCM_16"
    assert soundfile.info(tmp_path / "b.wav").frames == expected_samples(50)
    rng = np.random.default_rng(1)
    SpeakerPrompt(rng.normal(size=(20, 80)), rng.integers(0, 4096, 6), rng.normal(size=192)).save(tmp_path / "p")
    assert cli.main(["synth", "--model_dir", str(tiny_dir), "--tokens", ids, "--output", str(tmp_path / "c.wav"),
                     "--prompt_dir", str(tmp_path / "p"), "--no_noise"]) == 0
    assert soundfile.info(tmp_path / "c.wav").frames == expected_samples(50)


@pytest.mark.parametrize("args, words", [
    (["--tokens", "1 2 4097"], ["position 2 is 4097"]),
    (["--tokens", ""], ["empty"]),
    (["--tokens", "1 x"], ["--tokens"]),
    (["--model_dir", "/nonexistent/t2w"], ["/nonexistent/t2w"]),
])
def test_cli_errors_are_one_line(tiny_dir, tmp_path, capsys, args, words):
    base = {"--model_dir": str(tiny_dir), "--tokens": "1 2 3", "--output": str(tmp_path / "x.wav")}
    base.update(dict(zip(args[::2], args[1::2])))
    argv = ["synth"] + [x for kv in base.items() for x in kv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and all(w in err for w in words)
