"""kill -9 during training, rerun the same command: resume from the newest intact checkpoint.

Two kills here to keep the suite fast; `python bench/kill_resume.py` does five.
"""
import importlib.util
import os


def test_kill_and_rerun_resumes_with_intact_checkpoints(tmp_path, repo_root):
    spec = importlib.util.spec_from_file_location("kill_resume", os.path.join(repo_root, "bench", "kill_resume.py"))
    kill_resume = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kill_resume)
    final = kill_resume.run(str(tmp_path / "kr"), repeats=2, seed=1, log=lambda *_: None)
    assert final == kill_resume.STEPS_PER_EPOCH * kill_resume.EPOCHS
