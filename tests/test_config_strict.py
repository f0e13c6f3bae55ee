"""Strict config: every nested key known, typos named with the closest key, upstream keys implemented or refused."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from osum_echat.config import ConfigError, load_config, validate

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p.relative_to(REPO)) for p in [*REPO.glob("conf/*.yaml"), *REPO.glob("recipes/**/*.yaml")]
                 if "llm_path" in p.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", CONFIGS)
def test_every_shipped_config_loads(path):
    assert isinstance(load_config(REPO / path)["dataset_conf"], dict)


def test_shipped_configs_found():
    assert "conf/ct_config.yaml" in CONFIGS and len(CONFIGS) >= 8


@pytest.fixture
def full():
    return yaml.safe_load((REPO / "conf/ct_config.yaml").read_text(encoding="utf-8"))


def _error(cfg) -> str:
    with pytest.raises(ConfigError) as e:
        validate(cfg, source="x.yaml")
    return str(e.value)


@pytest.mark.parametrize("parent, typo, meant", [
    ("dataset_conf.filter_conf", "max_lenght", "dataset_conf.filter_conf.max_length"),
    ("dataset_conf.filter_conf.other_filter_conf", "onyl_s2s", "dataset_conf.filter_conf.other_filter_conf.only_s2s"),
    ("dataset_conf.other_tokenze_conf.use_think_mode", "enabel", "dataset_conf.other_tokenze_conf.use_think_mode.enable"),
    ("dataset_conf.spec_aug_conf", "num_t_masks", "dataset_conf.spec_aug_conf.num_t_mask"),
    ("dataset_conf.batch_conf", "max_seq_in_batchs", "dataset_conf.batch_conf.max_seq_in_batch"),
    ("encoder_conf", "num_block", "encoder_conf.num_blocks"),
    ("optim_conf", "weight_decy", "optim_conf.weight_decay"),
    ("scheduler_conf", "warmup_step", "scheduler_conf.warmup_steps"),
    ("tokenizer_conf", "llm_pth", "tokenizer_conf.llm_path"),
    ("dataset_conf", "shufle_conf", "dataset_conf.shuffle_conf"),
])
def test_nested_typo_names_full_path_and_closest_key(full, parent, typo, meant):
    node = full
    for k in parent.split("."):
        node = node.setdefault(k, {})
    node[typo] = 1
    msg = _error(full)
    assert f"unknown key '{parent}.{typo}'" in msg and f"did you mean '{meant}'" in msg and "x.yaml" in msg


def test_key_in_the_wrong_mapping_points_to_where_it_belongs(full):
    full["dataset_conf"]["max_seq_len"] = 100  # belongs in filter_conf
    assert "did you mean 'dataset_conf.filter_conf.max_seq_len'" in _error(full)


def test_override_typo_and_nested_type(repo_root):
    with pytest.raises(ConfigError, match=r"dataset_conf\.batch_conf\.batch_szie.*batch_conf\.batch_size"):
        load_config(repo_root / "conf/tiny_ct_config.yaml", ["dataset_conf.batch_conf.batch_szie=4"])
    with pytest.raises(ConfigError, match=r"dataset_conf\.filter_conf' is 5 .*expected a mapping"):
        load_config(repo_root / "conf/tiny_ct_config.yaml", ["dataset_conf.filter_conf=5"])
    with pytest.raises(ConfigError, match=r"dataset_conf\.spec_aug_conf\.max_t.*expected an integer"):
        load_config(repo_root / "conf/tiny_ct_config.yaml", ["dataset_conf.spec_aug_conf.max_t=long"])
    with pytest.raises(ConfigError, match=r"dataset_conf\.feats_type.*log_mel_spectrogram, fbank"):
        load_config(repo_root / "conf/tiny_ct_config.yaml", ["dataset_conf.feats_type=mfcc"])


@pytest.mark.parametrize("dotted, value, words", [
    ("dataset_conf.other_tokenze_conf.use_s2s_convert_s2t.enable", True, "no upstream processor reads it"),
    ("dataset_conf.other_tokenze_conf.only_info.only_s2t", True, "other_filter_conf.only_s2t"),
    ("dataset_conf.speed_perturb", True, "not supported"),
    ("dataset_conf.speaker_conf", {"speaker_table_path": "x"}, "not supported"),
    ("dataset_conf.filter_conf.min_output_input_ratio", 0.0005, "commented out"),
    ("dataset_conf.mfcc_conf", {"num_mel_bins": 40}, "not supported"),
])
def test_upstream_keys_not_implemented_are_refused_with_the_reason(full, dotted, value, words):
    node = full
    *parents, leaf = dotted.split(".")
    for k in parents:
        node = node.setdefault(k, {})
    node[leaf] = value
    msg = _error(full)
    assert dotted in msg and words in msg


def test_inert_values_of_those_keys_load(full):
    cfg = copy.deepcopy(full)
    validate(cfg, "x.yaml")  # ct_config.yaml carries use_s2s_convert_s2t.enable: false and only_info.*: false
    assert cfg["dataset_conf"]["other_tokenze_conf"]["use_s2s_convert_s2t"]["enable"] is False
