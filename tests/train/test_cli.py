"""The train CLI as upstream launches it, rerun = resume, and clear errors."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from synth_data import write_raw_list  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}


def upstream_launch(tmp_path, model_dir):
    """upstream train.sh's torchrun line, flag for flag (script path, four lists, ds flags)."""
    asr = write_raw_list(str(tmp_path / "d1"), n_asr=6, n_t2t=0, name="s2t.list")
    t2t = write_raw_list(str(tmp_path / "d2"), n_asr=0, n_t2t=6, name="t2t.list")
    empty = tmp_path / "empty.list"
    empty.write_text("")
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=1",
            "--node_rank=0", "--master_addr=127.0.0.1", "--master_port=29477",
            "osum_echat/bin/train.py", "--train_engine", "torch_ddp", "--config",
            "conf/tiny_ct_config.yaml", "--data_type", "raw", "--train_data_s2t", asr,
            "--train_data_t2s", str(empty), "--train_data_s2s", str(empty), "--train_data_t2t", t2t,
            "--cv_data", asr, "--model_dir", str(model_dir), "--tensorboard_dir",
            str(model_dir / "tensorboard"), "--ddp.dist_backend", "gloo", "--num_workers", "1",
            "--prefetch", "50", "--pin_memory", "--timeout", "1200", "--use_amp",
            "--deepspeed_config", "conf/ds_stage2.json", "--deepspeed.save_states", "model+optimizer",
            "--override_config", "max_steps=3", "--override_config", "dataset_conf.batch_conf.batch_size=2",
            "--override_config", "dataset_conf.filter_conf.min_length=1"]


def test_upstream_launch_line_trains_and_rerun_resumes(tmp_path):
    model_dir = tmp_path / "exp"
    cmd = upstream_launch(tmp_path, model_dir)
    first = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-4000:]
    assert (model_dir / "final.pt").exists() and (model_dir / "train.yaml").exists()
    assert list((model_dir / "tensorboard" / "exp").glob("events.*"))
    assert (model_dir / "step_3.yaml").exists()
    again = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "resumed from step_3: step 3" in again.stderr


@pytest.mark.parametrize("args, message", [
    ([], "no training data"),
    (["--train_data", "/nonexistent/list"], "/nonexistent/list"),
    (["--train_data", "x", "--train_engine", "torch_fsdp"], "torch_fsdp"),
])
def test_cli_errors_are_one_clear_line(tmp_path, args, message):
    cmd = [sys.executable, "-m", "osum_echat.bin.train", "--config", "conf/tiny_ct_config.yaml",
           "--device", "cpu", "--model_dir", str(tmp_path / "m"), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_data_that_is_all_broken_stops_naming_the_skips(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(f'{{"key": "k{i}", "txt": "hi", "wav": "/missing/{i}.wav", '
                           f'"task": "<TRANSCRIBE>"}}\n' for i in range(3)))
    cmd = [sys.executable, "-m", "osum_echat.bin.train", "--config", "conf/tiny_ct_config.yaml",
           "--device", "cpu", "--data_type", "raw", "--train_data", str(bad),
           "--model_dir", str(tmp_path / "m"), "--override_config", "train_conf.cv_at_start=false"]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "gave no batch" in proc.stderr and "missing_file" in proc.stderr


def test_train_sh_turns_data_yamls_into_lists_and_trains(tmp_path):
    asr = write_raw_list(str(tmp_path / "d1"), n_asr=6, n_t2t=0, name="asr.jsonl")
    t2t = write_raw_list(str(tmp_path / "d2"), n_asr=0, n_t2t=6, name="t2t.jsonl")
    (tmp_path / "s2t.yaml").write_text(f"asr:\n  path: {asr}\n  weight: 2\n")
    (tmp_path / "t2t.yaml").write_text(f"chat:\n  path: {t2t}\n")
    exp = tmp_path / "exp"
    cmd = ["bash", "train.sh", "--config", "conf/tiny_ct_config.yaml", "--dir", str(exp),
           "--data_type", "raw", "--data_s2t", str(tmp_path / "s2t.yaml"),
           "--data_t2t", str(tmp_path / "t2t.yaml"), "--train_engine", "torch_ddp",
           "--use_amp", "false", "--device", "cpu", "--max_steps", "2", "--num_workers", "0",
           "--override", "dataset_conf.batch_conf.batch_size=2 dataset_conf.filter_conf.min_length=1"]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert len((exp / "data" / "s2t.list").read_text().splitlines()) == 12  # weight 2
    assert len((exp / "data" / "t2t.list").read_text().splitlines()) == 6
    assert not (exp / "data" / "s2s.list").exists()
    assert (exp / "data" / "cv.list").read_text().count("\n") == 1  # upstream: first entry
    assert (exp / "final.pt").exists() and (exp / "step_2.yaml").exists()
