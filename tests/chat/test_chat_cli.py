"""python -m osum_echat.bin.chat: list the tasks, one request, a conversation from stdin, bad input."""
import io
import json
import subprocess
import sys
import types

import pytest

from osum_echat import tasks as task_table
from osum_echat.bin import chat as chat_cli


@pytest.fixture
def chat(capsys, monkeypatch):
    """Runs the CLI's main() in this process (one import of torch/transformers for all the tests)."""
    def run(_repo_root, *args, stdin=""):
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        try:
            code = chat_cli.main(list(args))
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return types.SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)
    return run


def test_list_tasks_needs_no_model(repo_root):
    r = subprocess.run([sys.executable, "-m", "osum_echat.bin.chat", "--list-tasks"], capture_output=True,
                       text=True, cwd=repo_root, timeout=300)
    assert r.returncode == 0, r.stderr
    for tag in task_table.TASKS:
        assert f"\n{tag}\n" in "\n" + r.stdout
    block = r.stdout.split("<S2TCHAT> <TEXT2TOKEN> <THINK>\n")[1].split("\n<")[0]
    assert "input: speech" in block and "think + text + speech tokens" in block and "decode preset:" in block
    assert "prompt examples: Listen to the audio" in r.stdout.split("<TRANSCRIBE>\n")[1].split("\n<")[0]


def test_one_request_writes_tokens_and_wav(chat, repo_root, tiny_checkpoints, tiny_token2wav, wavs, tmp_path):
    import soundfile as sf

    config, ckpt, _ = tiny_checkpoints
    r = chat(repo_root, "--config", config, "--checkpoint", ckpt, "--token2wav_dir", tiny_token2wav,
             "--task", "<S2TCHAT> <TEXT2TOKEN> <THINK>",
             "--wav", wavs["stereo8k"], "--output_dir", str(tmp_path), "--max_text_tokens", "5",
             "--max_speech_tokens", "9")
    assert r.returncode == 0, r.stderr
    assert "task: <S2TCHAT> <TEXT2TOKEN> <THINK> (speech2text_token_think)" in r.stdout
    assert "answer:" in r.stdout and "note: audio has 2 channels: mixed to mono" in r.stdout
    saved = json.loads((tmp_path / "turn_1.json").read_text())
    assert saved["output_type"] == "speech2text_token_think" and 0 < len(saved["speech_tokens"]) <= 9
    audio, rate = sf.read(tmp_path / "turn_1.wav")
    assert rate == 22050 and len(audio) == 256 * (len(saved["speech_tokens"]) * 22050 // (25 * 256))
    assert "first_audio" in saved["timings"] and f"wrote {tmp_path / 'turn_1.wav'}" in r.stdout


def test_interactive_is_one_conversation(chat, repo_root, tiny_checkpoints, wavs):
    config, ckpt, _ = tiny_checkpoints
    lines = "\n".join([wavs["q"], wavs["not_audio"], wavs["q2"], "/reset", wavs["q"]]) + "\n"
    r = chat(repo_root, "--config", config, "--checkpoint", ckpt, "--task", "<S2TCHAT> <TEXT2TOKEN>",
             "--interactive", "--max_text_tokens", "4", "--max_speech_tokens", "6", stdin=lines)
    assert r.returncode == 0, r.stderr
    seen = [line.rsplit(" ", 1)[1] for line in r.stdout.splitlines() if "history turns seen" in line]
    assert seen == ["0", "1", "0"]  # the bad line in between did not end the conversation
    assert "<S2TCHAT> <TEXT2TOKEN> <HISTORY>" in r.stdout and "conversation reset" in r.stdout
    assert f"error: not_audio: {wavs['not_audio']} is not an audio file" in r.stderr


def test_bad_input_is_one_line_and_exit_2(chat, repo_root, tiny_checkpoints, wavs):
    config, ckpt, _ = tiny_checkpoints
    r = chat(repo_root, "--config", config, "--checkpoint", ckpt, "--task", "<TRANSCRIBE>", "--wav", wavs["long"])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: audio_too_long: ")
    r = chat(repo_root, "--config", config, "--checkpoint", ckpt, "--task", "<TEXT2TEXT>", "--text", "")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: empty_text: ")


def test_model_and_config_mistakes_are_one_line(chat, repo_root, tiny_checkpoints, tmp_path):
    config, ckpt, _ = tiny_checkpoints
    typo = tmp_path / "typo.yaml"
    typo.write_text((repo_root / "conf/tiny_ct_config.yaml").read_text() + "\nlerning_rate: 0.1\n")
    for args, expect in [(("--config", str(typo), "--checkpoint", ckpt), "lerning_rate"),
                         (("--config", config, "--checkpoint", str(tmp_path / "none.pt")), "checkpoint file not found"),
                         (("--config", config, "--checkpoint", ckpt, "--token2wav_dir", str(tmp_path / "nodir")),
                          "no such model directory")]:
        r = chat(repo_root, *args, "--text", "hi", "--task", "<TEXT2TEXT>")
        assert r.returncode == 2 and expect in r.stderr and "Traceback" not in r.stderr, r.stderr
