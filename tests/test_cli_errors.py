"""Expected user mistakes end every command-line tool with one clear line, before any model is built."""
import subprocess
import sys

import pytest


def run(repo_root, *argv):
    r = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=repo_root, timeout=300)
    return r.returncode, r.stderr + r.stdout


@pytest.fixture
def bad_configs(tmp_path, repo_root):
    text = (repo_root / "conf/tiny_ct_config.yaml").read_text()
    no_tok = tmp_path / "no_tokenizer"
    no_tok.mkdir()
    (no_tok / "config.json").write_text((repo_root / "conf/tiny_llm/config.json").read_text())
    out = {
        "typo": text + "\nlerning_rate: 0.1\n",
        "llm_missing": text.replace("conf/tiny_llm", str(tmp_path / "nowhere")),
        "no_tokenizer": text.replace("conf/tiny_llm", str(no_tok)),
        "no_prompts": text.replace("prompt_conf_path: conf/prompt_config.yaml",
                                   f"prompt_conf_path: {tmp_path / 'missing.yaml'}"),
    }
    paths = {}
    for name, body in out.items():
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(body)
    return paths


EXPECT = {"typo": "lerning_rate", "llm_missing": "no such local directory", "no_tokenizer": "no tokenizer files",
          "no_prompts": "prompt_conf_path"}


@pytest.mark.parametrize("case", sorted(EXPECT))
def test_train_reports_config_mistakes_in_one_line(case, bad_configs, tmp_path, repo_root):
    code, out = run(repo_root, "osum_echat.bin.train", "--config", str(bad_configs[case]),
                    "--model_dir", str(tmp_path / "exp"), "--train_data", str(tmp_path / "none.list"))
    assert code != 0
    assert EXPECT[case] in out and "Traceback" not in out, out


@pytest.mark.parametrize("case", ["typo", "no_tokenizer"])
def test_other_tools_report_config_mistakes_in_one_line(case, bad_configs, tmp_path, repo_root):
    for argv in (["osum_echat.bin.compute_loss", "--config", str(bad_configs[case]), "--checkpoint", "x.pt",
                  "--data_type", "raw", "--data", "x.list", "--output", str(tmp_path / "o.jsonl")],
                 ["osum_echat.bin.infer", "--config", str(bad_configs[case]), "--checkpoint", "x.pt",
                  "--data_type", "raw", "--data", "x.list", "--output", str(tmp_path / "o")],
                 ["osum_echat.bin.inspect_data", "--config", str(bad_configs[case]), "--data_type", "raw",
                  "--data", "x.list"]):
        code, out = run(repo_root, *argv)
        assert code != 0 and EXPECT[case] in out and "Traceback" not in out, (argv[0], out)


def test_unavailable_device_is_one_line(tmp_path, repo_root):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: asking for cuda is not a mistake here")
    code, out = run(repo_root, "osum_echat.bin.train", "--config", "conf/tiny_ct_config.yaml", "--device", "cuda",
                    "--model_dir", str(tmp_path / "exp"), "--train_data", str(tmp_path / "none.list"))
    assert code != 0 and "'cuda' requested but not available" in out and "Traceback" not in out, out
