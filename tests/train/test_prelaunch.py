"""train.sh checks the config, model files and data lists once, before torchrun and before DeepSpeed."""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from synth_data import write_raw_list  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
TINY = open(os.path.join(REPO, "conf/tiny_ct_config.yaml"), encoding="utf-8").read()


@pytest.fixture
def data_yaml(tmp_path):
    asr = write_raw_list(str(tmp_path / "d"), n_asr=2, n_t2t=0, name="asr.jsonl")
    (tmp_path / "s2t.yaml").write_text(f"asr:\n  path: {asr}\n")
    return tmp_path / "s2t.yaml"


def train_sh(tmp_path, config_text, data_yaml, *extra):
    config = tmp_path / "c.yaml"
    config.write_text(config_text)
    # 2 CPU processes with the DeepSpeed engine: a launch would go through torchrun and DeepSpeed
    cmd = ["bash", "train.sh", "--config", str(config), "--dir", str(tmp_path / "exp"), "--data_type", "raw",
           "--data_s2t", str(data_yaml), "--device", "cpu", "--nproc_per_node", "2", "--use_amp", "false", *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def errors_only(out):
    return [line for line in out.splitlines() if line.startswith("error:")]


def test_nested_typo_stops_train_sh_in_one_line(tmp_path, data_yaml):
    code, out = train_sh(tmp_path, TINY.replace("    max_length: 20000", "    max_lenght: 20000"), data_yaml)
    assert code != 0
    assert errors_only(out) == [
        f"error: {tmp_path / 'c.yaml'}: unknown key 'dataset_conf.filter_conf.max_lenght' (did you mean "
        "'dataset_conf.filter_conf.max_length'?); the known keys are upstream's ct_config.yaml schema "
        "(osum_echat/config_schema.py)"]
    for launched in ("Traceback", "ChildFailedError", "torch.distributed", "deepspeed.ops", "[rank"):
        assert launched not in out, out


def test_missing_local_llm_folder_suggests_a_local_fix(tmp_path, data_yaml):
    code, out = train_sh(tmp_path, TINY.replace("conf/tiny_llm", "conf/qwen2.5-3b-instruct-missing"), data_yaml)
    assert code != 0 and "Traceback" not in out
    [line] = errors_only(out)
    assert "llm_path 'conf/qwen2.5-3b-instruct-missing': no such local directory" in line
    assert "huggingface-cli" not in line and "set llm_path to the folder" in line


def test_missing_data_and_checkpoint_are_one_line(tmp_path, data_yaml):
    broken = tmp_path / "broken.jsonl"
    broken.write_text("".join(json.dumps({"key": f"k{i}", "wav": f"/nowhere/{i}.wav", "txt": "hi"}) + "\n"
                              for i in range(3)))
    (tmp_path / "broken.yaml").write_text(f"asr:\n  path: {broken}\n")
    code, out = train_sh(tmp_path, TINY, tmp_path / "broken.yaml")
    assert code != 0 and "Traceback" not in out
    [line] = errors_only(out)
    assert "s2t.list: none of the 3 files checked exist (first: /nowhere/" in line
    code, out = train_sh(tmp_path, TINY, data_yaml, "--checkpoint", str(tmp_path / "init.pt"))
    assert code != 0 and errors_only(out) == [f"error: --checkpoint {tmp_path / 'init.pt'}: file not found"]


def test_check_config_imports_no_deepspeed_and_warns_on_some_missing(tmp_path, data_yaml):
    asr = write_raw_list(str(tmp_path / "d2"), n_asr=3, n_t2t=0, name="asr.jsonl")
    lines = open(asr).read().splitlines()
    with open(asr, "a") as f:
        f.write(json.dumps({**json.loads(lines[0]), "key": "gone", "wav": "/nowhere/x.wav"}) + "\n")
    probe = ("import sys, runpy\n"
             f"sys.argv = ['check_config', '--config', 'conf/tiny_ct_config.yaml', '--data', {asr!r},"
             " '--data_type', 'raw', '--deepspeed_config', 'conf/ds_stage2.json', '--device', 'cpu']\n"
             "try:\n    runpy.run_module('osum_echat.bin.check_config', run_name='__main__')\n"
             "except SystemExit as e:\n    assert not e.code, e.code\n"
             "print('deepspeed imported' if any(m.startswith('deepspeed') for m in sys.modules) else 'no deepspeed')\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["ok: conf/tiny_ct_config.yaml", "no deepspeed"]
    assert "warning: data list" in proc.stderr and "1 of 4 files checked are missing" in proc.stderr
