"""Every command README.md and docs/*.md show as runnable runs as written in a fresh checkout after the demo.

The commands are the lines of fenced blocks whose info string is exactly `bash runnable` (a trailing `\\`
continues a command), and the code spans of the command column of README's "Next steps" table. They run
one by one (bash, pipefail), in document order, each command once, from a folder laid out like a fresh
clone whose `exp/demo` is this session's own demo run: `recipes/demo/run.sh --max_steps 20 --stop_stage 3`,
then its stage 5 (evaluation) (~2 min on one thread: the same recipe, stages and outputs as `bash train.sh`,
with fewer steps and no summary, whose targets need the full run). Nothing here reads the developer's exp/.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```bash runnable\n(.*?)^```", re.M | re.S)
NOT_RUN = {  # shown commands that this test does not run, and why
    "bash tools/install.sh && . .venv/bin/activate && bash train.sh":
        "the install and the whole demo (~5 min): the fixture runs the same recipe with --max_steps 20",
    "bash tools/run_tests.sh": "the whole test suite, of which this test is part",
}
SERVER_MARK = "(server)"  # a README table row so marked starts a server: tests/serve and tests/chat run those
MAX_README_LINES = 150


def _commands(block: str) -> list:
    out, current = [], ""
    for line in block.splitlines():
        current += line.strip() if current else line.rstrip()
        if current.endswith("\\"):
            current = current[:-1].rstrip() + " "
            continue
        command = current.strip()
        current = ""
        if command and not command.startswith("#"):
            out.append(command)
    return out


def _without_comment(command: str) -> str:
    return re.sub(r"\s+#[^'\"]*$", "", command).strip()


def readme_table_commands(text: str) -> list:
    """Code spans in the command column (2nd) of the rows of README's "## Next steps" table."""
    section = text.split("\n## Next steps", 1)[1].split("\n## ", 1)[0]
    out = []
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) < 2 or set(cells[1]) <= set("-: ") or SERVER_MARK in row:
            continue
        out += re.findall(r"`([^`]+)`", cells[1])
    return out


def shown_commands() -> list:
    """(where, command) in document order, each command once, NOT_RUN left out."""
    seen, out = set(), []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        found = [(f"{path.name}:table", c) for c in readme_table_commands(text)] if path.name == "README.md" else []
        for m in FENCE.finditer(text):
            line = text[:m.start()].count("\n") + 1
            found += [(f"{path.relative_to(REPO)}:{line}", c) for c in _commands(m.group(1))]
        for where, command in found:
            if _without_comment(command) in NOT_RUN or command in seen:
                continue
            seen.add(command)
            out.append((where, command))
    return out


COMMANDS = shown_commands()


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory):
    """A folder like a fresh clone (the repo's files, linked) whose exp/demo is a short demo run."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is required by the demo recipe: apt-get install -y espeak-ng (tools/install.sh installs it)")
    root = tmp_path_factory.mktemp("fresh_clone")
    demo = root / "demo_run" / "exp" / "demo"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # stages 0-3 with fewer steps, then the evaluation stage; not the summary, whose targets need the full run
    for stages in (["--max_steps", "20", "--stop_stage", "3"], ["--stage", "5", "--stop_stage", "5"]):
        r = subprocess.run(["bash", "recipes/demo/run.sh", "--dir", str(demo), *stages],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    clone = root / "clone"
    clone.mkdir()
    for name in os.listdir(REPO):
        if name not in {".git", "exp", ".venv", ".pytest_cache", "__pycache__"}:
            (clone / name).symlink_to(REPO / name)
    (clone / "exp").mkdir()
    (clone / "exp" / "demo").symlink_to(demo)
    return clone


@pytest.mark.parametrize("where, command", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_shown_command_runs_as_written(fresh_clone, where, command):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=fresh_clone, env=env, capture_output=True,
                       text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{where}: {command}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"


def test_readme_is_short_and_starts_with_the_two_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_README_LINES
    first = text.split("```", 2)[1]
    assert "bash tools/install.sh && . .venv/bin/activate && bash train.sh" in first
    assert "bash tools/run_tests.sh" in first


def test_every_docs_link_resolves_and_every_doc_is_linked():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            if "://" not in target:
                assert (path.parent / target).exists(), f"{path.name}: link to {target} goes nowhere"
    for doc in DOCS[1:]:
        assert f"docs/{doc.name}" in readme, f"README.md does not link docs/{doc.name}"


def test_the_table_and_blocks_are_found():
    """The extraction itself: a table row, a runnable block with a continued line, the NOT_RUN lines."""
    text = "x\n## Next steps\n| tool | command |\n|---|---|\n| a | `python -m a --x 1` |\n| s | `serve` (server) |\n## Docs\n"
    assert readme_table_commands(text) == ["python -m a --x 1"]
    assert _commands("# c\npython -m b \\\n    --y 2\n\nls  # list\n") == ["python -m b --y 2", "ls  # list"]
    assert _without_comment("bash tools/run_tests.sh   # run the tests") == "bash tools/run_tests.sh"
    assert len(COMMANDS) >= 20 and all(_without_comment(c) not in NOT_RUN for _, c in COMMANDS)
