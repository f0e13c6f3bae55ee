import subprocess
import sys

import pytest

from osum_echat.config import ConfigError, apply_override, check_llm_path, load_config


def test_full_and_tiny_configs_load(repo_root):
    full = load_config(repo_root / "conf/ct_config.yaml")
    tiny = load_config(repo_root / "conf/tiny_ct_config.yaml")
    assert full["speech_token_num"] == 4097 and full["encoder_conf"]["num_blocks"] == 24
    assert tiny["encoder_conf"]["output_size"] < full["encoder_conf"]["output_size"]
    # The anchor makes the tokenizer and dataset read the same values as the top level.
    assert full["tokenizer_conf"]["llm_path"] == full["llm_path"]
    assert full["dataset_conf"]["speech_token_num"] == full["speech_token_num"]


def test_unknown_key_is_named(tmp_path, repo_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text((repo_root / "conf/ct_config.yaml").read_text() + "\nlerning_rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert "lerning_rate" in str(e.value) and str(bad) in str(e.value)


def test_wrong_type_is_named(tmp_path, repo_root):
    bad = tmp_path / "bad.yaml"
    text = (repo_root / "conf/ct_config.yaml").read_text().replace("accum_grad: 8", "accum_grad: eight")
    bad.write_text(text)
    with pytest.raises(ConfigError, match="accum_grad.*expected an integer"):
        load_config(bad)
    bad.write_text(text.replace("accum_grad: eight", "accum_grad: 8").replace("batch_size: 26", "batch_size: [1]"))
    with pytest.raises(ConfigError, match="dataset_conf.batch_conf.batch_size"):
        load_config(bad)


def test_bad_choice_and_bad_yaml(tmp_path, repo_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text((repo_root / "conf/ct_config.yaml").read_text().replace(
        "fire_module: link_and_encoder_and_lora", "fire_module: everything"))
    with pytest.raises(ConfigError, match="fire_module.*link_and_encoder"):
        load_config(bad)
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_numeric_strings_become_numbers(tmp_path, repo_root):
    f = tmp_path / "c.yaml"
    f.write_text((repo_root / "conf/ct_config.yaml").read_text().replace("lr: 1.0e-06", "lr: 1e-6"))
    assert load_config(f)["optim_conf"]["lr"] == pytest.approx(1e-6)


def test_overrides(repo_root):
    cfg = load_config(repo_root / "conf/tiny_ct_config.yaml",
                      ["dataset_conf.batch_conf.batch_size=7", "use_lora=true", "optim_conf.betas=[0.8, 0.9]"])
    assert cfg["dataset_conf"]["batch_conf"]["batch_size"] == 7
    assert cfg["use_lora"] is True and cfg["optim_conf"]["betas"] == [0.8, 0.9]
    with pytest.raises(ConfigError, match="lerning_rate"):
        apply_override(cfg, "lerning_rate=0.1")
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(repo_root / "conf/tiny_ct_config.yaml", ["accum_grad=abc"])


def test_check_llm_path(tmp_path, repo_root):
    assert check_llm_path("conf/tiny_llm").resolve() == repo_root / "conf/tiny_llm"
    with pytest.raises(ConfigError, match="no such local directory"):
        check_llm_path(str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="config.json is missing"):
        check_llm_path(str(tmp_path))
    # The full-size folder as committed (config.json only, the tokenizer is written by install.sh):
    # fine for a meta-device build, not for tokenizing.
    bare = tmp_path / "qwen_bare"
    bare.mkdir()
    (bare / "config.json").write_text((repo_root / "conf/qwen2.5-3b-instruct/config.json").read_text())
    assert check_llm_path(str(bare), need_tokenizer=False).is_dir()
    with pytest.raises(ConfigError, match="no tokenizer files"):
        check_llm_path(str(bare))


def test_check_config_cli_reports_one_line(tmp_path, repo_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text((repo_root / "conf/tiny_ct_config.yaml").read_text() + "\nlerning_rate: 0.1\n")
    r = subprocess.run([sys.executable, "-m", "osum_echat.bin.check_config", "--config", str(bad)],
                       capture_output=True, text=True, cwd=repo_root)
    assert r.returncode != 0
    assert "lerning_rate" in r.stderr and "Traceback" not in r.stderr
    ok = subprocess.run([sys.executable, "-m", "osum_echat.bin.check_config", "--config",
                         "conf/tiny_ct_config.yaml"], capture_output=True, text=True, cwd=repo_root)
    assert ok.returncode == 0, ok.stderr
