"""Task names a person types: unambiguous spellings are read as their tag, anything else is exit 2
naming the closest tags (CLI), ChatInputError (Python API) or a status line (web demo, in test_web_demo)."""
import subprocess
import sys

import pytest

from osum_echat import tasks as task_table


@pytest.mark.parametrize("typed, tag", [
    ("transcribe", "<TRANSCRIBE>"), ("S2S_Think", "<S2TCHAT> <TEXT2TOKEN> <THINK>"),
    ("<S2TCHAT><THINK>", "<S2TCHAT> <THINKER>"), ("<S2TCHAT><TEXT2TOKEN><THINK>", "<S2TCHAT> <TEXT2TOKEN> <THINK>"),
    ("  <transcribe>   <age> ", "<TRANSCRIBE> <AGE>"), ("TEXT2TEXT", "<TEXT2TEXT>"),
    ("<Speech2TEXTandTOKEN>", "<S2TCHAT> <TEXT2TOKEN>"),
])
def test_unambiguous_spellings_are_their_tag(typed, tag):
    assert task_table.resolve_task(typed) == tag


@pytest.mark.parametrize("typed, closest", [
    ("<TRANSCRIBER>", "<TRANSCRIBE>"), ("<EMOTIONS>", "<EMOTION>"), ("<TEXT2TOKENS>", "<TEXT2TOKEN>"),
])
def test_unknown_names_give_the_closest_tags(typed, closest):
    with pytest.raises(task_table.UnknownTaskError) as e:
        task_table.resolve_task(typed)
    message = str(e.value)
    assert repr(typed) in message and message.split("closest: ")[1].startswith(closest)
    assert "--list-tasks" in message


def test_every_row_and_helper_resolves_to_itself():
    for tag in task_table.TASKS:
        assert task_table.resolve_task(tag) == tag
    for name, tag in task_table.HELPER_TASKS.items():
        assert task_table.resolve_task(name) == tag
    with pytest.raises(task_table.UnknownTaskError, match="no task given"):
        task_table.resolve_task("  ")


def chat(*args):
    from osum_echat.bin import chat as chat_cli

    try:
        return chat_cli.main(list(args))
    except SystemExit as e:
        return e.code


def test_chat_cli_typo_exits_2_and_helper_names_run(tiny_checkpoints, wavs, repo_root, capsys):
    config, ckpt, _ = tiny_checkpoints
    base = ["--config", config, "--checkpoint", ckpt, "--wav", wavs["q"], "--max_text_tokens", "3"]
    r = subprocess.run([sys.executable, "-m", "osum_echat.bin.chat", *base, "--task", "<TRANSCRIBER>"],
                       capture_output=True, text=True, cwd=repo_root, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: unknown task '<TRANSCRIBER>'; closest: <TRANSCRIBE>") and "--list-tasks" in last
    assert chat(*base, "--task", "transcribe") == 0
    out = capsys.readouterr()
    assert "task: <TRANSCRIBE> (text)" in out.out and "read as <TRANSCRIBE>" in out.err
    assert chat(*base, "--task", "<S2TCHAT><THINK>") == 0
    assert "task: <S2TCHAT> <THINKER> (s2t_chat_think)" in capsys.readouterr().out
