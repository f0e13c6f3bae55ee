"""One rule for configs (the train.yaml beside a checkpoint when --config is not given) and 16-bit PCM
wavs by default wherever audio is written."""
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest
import soundfile as sf

from osum_echat.config import ConfigError, resolve_config
from osum_echat.infer.audio_io import write_wav


@pytest.fixture
def trained_dir(tmp_path, tiny_checkpoints):
    """A stage folder as training leaves it (final.pt + train.yaml), and a link to its final.pt
    elsewhere, as the demo's tag_think_final.pt."""
    config, ckpt, _ = tiny_checkpoints
    stage = tmp_path / "stage3"
    stage.mkdir()
    shutil.copy(ckpt, stage / "final.pt")
    shutil.copy(config, stage / "train.yaml")
    os.symlink("stage3/final.pt", tmp_path / "think_final.pt")
    return tmp_path


def test_resolve_config_given_beside_linked_and_missing(trained_dir, tmp_path_factory):
    stage = trained_dir / "stage3"
    other = trained_dir / "other.yaml"
    other.write_text("model: osum_echat\n")
    assert resolve_config(str(other), str(stage / "final.pt")) == str(other)
    assert resolve_config(None, str(stage / "final.pt")) == str(stage / "train.yaml")
    assert resolve_config(None, str(trained_dir / "think_final.pt")) == str(stage / "train.yaml")
    lone = tmp_path_factory.mktemp("lone") / "model.pt"
    lone.write_bytes(b"")
    with pytest.raises(ConfigError) as e:
        resolve_config(None, str(lone))
    assert str(lone) in str(e.value) and str(lone.parent / "train.yaml") in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        resolve_config(str(trained_dir / "nope.yaml"), str(stage / "final.pt"))
    assert "nope.yaml" in str(e.value) and "final.pt" in str(e.value)


def run_chat(*args):
    from osum_echat.bin import chat

    try:
        return chat.main(list(args))
    except SystemExit as e:
        return e.code


def test_chat_takes_the_saved_config_and_a_mismatch_is_one_line(trained_dir, repo_root, wavs, capsys):
    link = str(trained_dir / "think_final.pt")
    assert run_chat("--checkpoint", link, "--task", "<TRANSCRIBE>", "--wav", wavs["q"],
                    "--max_text_tokens", "3") == 0
    assert "task: <TRANSCRIBE> (text)" in capsys.readouterr().out
    bigger = trained_dir / "bigger.yaml"  # a config whose model the checkpoint does not fit
    bigger.write_text((repo_root / "conf/tiny_ct_config.yaml").read_text())
    code = run_chat("--config", str(bigger), "--checkpoint", link, "--override", "encoder_conf.num_blocks=3",
                    "--task", "<TRANSCRIBE>", "--wav", wavs["q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert str(bigger) in err[0] and link in err[0] and "drop --config to use" in err[0]
    lone = trained_dir / "lone"
    lone.mkdir()
    shutil.copy(trained_dir / "stage3" / "final.pt", lone / "k.pt")
    assert run_chat("--checkpoint", str(lone / "k.pt"), "--text", "hi", "--task", "<TEXT2TEXT>") == 2
    err = capsys.readouterr().err
    assert "no --config given" in err and str(lone / "train.yaml") in err


def wav_header(path):
    """(format tag, channels, rate, bits per sample) from the fmt chunk of a RIFF/WAVE file."""
    data = open(path, "rb").read()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    i = data.index(b"fmt ")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[i + 8:i + 24])
    return tag, channels, rate, bits


def soxi_reads_cleanly(path):
    """soxi's stdout and stderr for the file, when sox is installed (tools/install.sh installs it)."""
    r = subprocess.run(["soxi", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    return r.stdout


def test_write_wav_is_pcm16_by_default_and_float_on_request(tmp_path):
    x = np.sin(np.linspace(0, 200, 22050)).astype(np.float32) * 1.2  # beyond full scale: clipped, not wrapped
    write_wav(tmp_path / "sub" / "a.wav", x, 22050)
    assert wav_header(tmp_path / "sub" / "a.wav") == (1, 1, 22050, 16)
    back, _ = sf.read(tmp_path / "sub" / "a.wav")
    assert back.max() > 0.99 and back.min() < -0.99 and np.abs(back - np.clip(x, -1, 1)).max() < 1e-4
    write_wav(tmp_path / "f.wav", x, 16000, subtype="FLOAT")
    assert wav_header(tmp_path / "f.wav")[0] == 3  # WAVE_FORMAT_IEEE_FLOAT
    if shutil.which("soxi") is None:
        pytest.skip("soxi not installed (tools/install.sh installs sox)")
    out = soxi_reads_cleanly(tmp_path / "sub" / "a.wav")
    assert "16-bit Signed Integer PCM" in out and "22050" in out


def test_chat_and_token2wav_write_pcm16(tiny_checkpoints, tiny_token2wav, wavs, tmp_path, capsys):
    from osum_echat.bin import token2wav

    config, ckpt, _ = tiny_checkpoints
    assert run_chat("--config", config, "--checkpoint", ckpt, "--token2wav_dir", tiny_token2wav, "--task",
                    "<TEXT2TOKEN>", "--text", "hello there", "--output_dir", str(tmp_path / "chat"),
                    "--max_speech_tokens", "8") == 0
    assert wav_header(tmp_path / "chat" / "turn_1.wav")[::3] == (1, 16)
    assert token2wav.main(["synth", "--model_dir", tiny_token2wav, "--tokens", "1 2 3 4 5 6 7 8 9 10",
                           "--output", str(tmp_path / "t.wav")]) == 0
    assert wav_header(tmp_path / "t.wav") == (1, 1, 22050, 16)
    assert token2wav.main(["synth", "--model_dir", tiny_token2wav, "--tokens", "1 2 3 4 5 6 7 8 9 10",
                           "--output", str(tmp_path / "f.wav"), "--wav_format", "float32"]) == 0
    assert sf.info(tmp_path / "f.wav").subtype == "FLOAT"
    capsys.readouterr()
