"""Upstream dataset_conf keys do what upstream does with them, visibly (never accepted and ignored)."""
from __future__ import annotations

import copy

import pytest

from osum_echat.config import ConfigError
from osum_echat.data.dataset import build_dataset

TOKENS = list(range(40))


def _four_kinds(corpus, **fields):
    corpus.add("s2t", **fields)
    corpus.add("t2s", task="<TEXT2TOKEN>", extra={"speech_token": TOKENS}, wav=False)
    corpus.add("s2s", task="<S2TCHAT> <TEXT2TOKEN>", extra={"speech_token": TOKENS})
    corpus.add("t2t", task="<TEXT2TEXT>", extra={"question": "q?"}, wav=False)
    return str(corpus.write())


def _run(cfg, data, tok):
    ds = build_dataset(cfg, "raw", data, tok)
    keys = [k for b in ds for k in b.keys]
    return keys, ds


def test_other_filter_conf_only_keeps_one_direction(corpus, data_config, tiny_tokenizer):
    data = _four_kinds(corpus)
    for direction in ("s2t", "t2s", "s2s", "t2t"):
        cfg = copy.deepcopy(data_config)
        cfg["dataset_conf"]["filter_conf"]["other_filter_conf"][f"only_{direction}"] = True
        keys, ds = _run(cfg, data, tiny_tokenizer)
        assert keys == [direction] and ds.skip_counts() == {"mix_category": 3}


def test_two_only_flags_are_refused(corpus, data_config, tiny_tokenizer):
    data = _four_kinds(corpus)
    cfg = copy.deepcopy(data_config)
    cfg["dataset_conf"]["filter_conf"]["other_filter_conf"].update(only_s2t=True, only_t2t=True)
    with pytest.raises(ConfigError, match="only_s2t and only_t2t.*at most one"):
        _run(cfg, data, tiny_tokenizer)


@pytest.mark.parametrize("flag", [True, False])
def test_filter_no_extra_info_counts_entries_without_task(corpus, data_config, tiny_tokenizer, flag):
    corpus.add("no_task", task=None)
    corpus.add("with_task")
    cfg = copy.deepcopy(data_config)
    cfg["dataset_conf"]["filter_conf"]["filter_no_extra_info"] = flag
    ds = build_dataset(cfg, "raw", str(corpus.write()), tiny_tokenizer)
    batches = list(ds)
    # trained as <TRANSCRIBE> either way, as upstream (its check runs after the task is filled in)
    assert [(k, t) for b in batches for k, t in zip(b.keys, b.task)] == \
        [("no_task", "<TRANSCRIBE>"), ("with_task", "<TRANSCRIBE>")]
    assert ds.note_counts() == ({"no_task": 1} if flag else {})


def test_limited_langs_counts_other_languages(corpus, data_config, tiny_tokenizer):
    corpus.add("zh", lang="zh")
    corpus.add("en", lang="en")
    corpus.add("fr_in_extra", extra={"lang": "fr"})
    corpus.add("none", lang="none")
    cfg = copy.deepcopy(data_config)
    cfg["dataset_conf"]["language_conf"] = {"limited_langs": ["zh", "en"]}
    keys, ds = _run(cfg, str(corpus.write()), tiny_tokenizer)
    assert keys == ["zh", "en", "fr_in_extra", "none"] and ds.note_counts() == {"other_language": 1}


def test_eod_id_must_be_the_tokenizers_end(corpus, data_config, tiny_tokenizer):
    data = str(corpus.write())
    cfg = copy.deepcopy(data_config)
    cfg["dataset_conf"]["eod_id"] = tiny_tokenizer.eos_token_id
    build_dataset(cfg, "raw", data, tiny_tokenizer)
    cfg["dataset_conf"]["eod_id"] = 151645  # Qwen2.5's <|im_end|>, not the tiny tokenizer's
    with pytest.raises(ConfigError, match="eod_id is 151645"):
        build_dataset(cfg, "raw", data, tiny_tokenizer)
