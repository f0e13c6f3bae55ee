"""save-prompt writes the three .npy files that synth --prompt_dir reads: rendering with them equals
rendering with --prompt_wav (deterministic mode), and no ONNX file is needed for it."""
from __future__ import annotations

import numpy as np
import soundfile

from osum_echat.bin.token2wav import main, make_tiny
from osum_echat.token2wav.frontend import Frontend, SpeakerPrompt
from osum_echat.token2wav.tiny_onnx import write_tiny_onnx


def test_save_prompt_then_synth_prompt_dir_equals_prompt_wav(tmp_path, capsys):
    model = make_tiny(tmp_path / "tiny")
    t = np.arange(int(1.2 * 48000)) / 48000
    wav = (0.3 * np.sin(2 * np.pi * (150 + 80 * np.sin(2 * np.pi * t)) * t)).astype(np.float32)
    soundfile.write(tmp_path / "prompt.wav", wav, 48000, subtype="PCM_16")
    assert main(["save-prompt", "--model_dir", str(model), "--prompt_wav", str(tmp_path / "prompt.wav"),
                 "--out", str(tmp_path / "p")]) == 0
    saved = SpeakerPrompt.load(tmp_path / "p")
    direct = Frontend(model, threads=1).prompt_from_wav(tmp_path / "prompt.wav")
    for name in ("prompt_mel", "prompt_tokens", "spk_embedding"):
        np.testing.assert_array_equal(getattr(saved, name), getattr(direct, name))
    assert saved.prompt_mel.shape == (int(1.2 * 22050) // 256, 80) and saved.prompt_tokens.size == 30  # 120 frames of 10 ms

    tokens = "5 77 1200 4000 31 31 900 2048 17 3"
    common = ["synth", "--model_dir", str(model), "--tokens", tokens, "--no_noise"]
    assert main([*common, "--prompt_wav", str(tmp_path / "prompt.wav"), "--output", str(tmp_path / "a.wav")]) == 0
    for onnx in ("campplus.onnx", "speech_tokenizer_v1.onnx"):  # a saved voice needs no ONNX at all
        (model / onnx).unlink()
    assert main([*common, "--prompt_dir", str(tmp_path / "p"), "--output", str(tmp_path / "b.wav")]) == 0
    a, b = soundfile.read(tmp_path / "a.wav")[0], soundfile.read(tmp_path / "b.wav")[0]
    assert a.size == 256 * int(10 * 22050 / (25 * 256)) and np.array_equal(a, b)
    # a speaker embedding only: zero-length prompt mel and tokens
    SpeakerPrompt(np.zeros((0, 80)), [], saved.spk_embedding).save(tmp_path / "z")
    assert main([*common, "--prompt_dir", str(tmp_path / "z"), "--output", str(tmp_path / "z.wav")]) == 0
    z = soundfile.read(tmp_path / "z.wav")[0]
    assert z.size == a.size and np.isfinite(z).all() and not np.array_equal(z, a)


def test_save_prompt_errors_are_one_line(tmp_path, capsys):
    model = tmp_path / "m"
    model.mkdir()
    argv = ["save-prompt", "--model_dir", str(model), "--prompt_wav", str(tmp_path / "x.wav"), "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "speech_tokenizer_v1.onnx: missing" in err and len(err.strip().splitlines()) == 1
    write_tiny_onnx(model)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'x.wav'}: prompt audio does not exist" in err and len(err.strip().splitlines()) == 1
