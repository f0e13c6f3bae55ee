"""Four-way mixing from one list: the list is read once and each sample's audio decoded once."""
from __future__ import annotations

import collections
import copy

import pytest

from osum_echat.config import ConfigError
from osum_echat.data import dataset as dataset_module
from osum_echat.data import features
from osum_echat.data.dataset import build_dataloader, build_dataset

TOKENS = list(range(10, 90))


@pytest.fixture
def one_list(corpus):
    for i in range(3):
        corpus.add(f"s2t{i}")
        corpus.add(f"t2s{i}", task="<TEXT2TOKEN>", extra={"speech_token": TOKENS}, wav=False)
        corpus.add(f"s2s{i}", task="<S2TCHAT> <TEXT2TOKEN>", extra={"speech_token": TOKENS})
        corpus.add(f"t2t{i}", task="<TEXT2TEXT>", extra={"question": "q?"}, wav=False)
    return str(corpus.write())


@pytest.fixture
def counted(monkeypatch):
    """Counts list entries read and audio decodes, by what they name."""
    reads, decodes = collections.Counter(), collections.Counter()
    read_entry, decode_audio = dataset_module.read_entry, features.decode_audio

    def read(entry, *a, **kw):
        reads[entry.value] += 1
        return read_entry(entry, *a, **kw)

    def decode(audio, *a, **kw):
        decodes[str(audio)] += 1
        return decode_audio(audio, *a, **kw)

    monkeypatch.setattr(dataset_module, "read_entry", read)
    monkeypatch.setattr(features, "decode_audio", decode)
    return reads, decodes


def test_one_list_for_four_directions_is_read_and_decoded_once(one_list, data_config, tiny_tokenizer, counted):
    reads, decodes = counted
    ds = build_dataset(data_config, "raw", {d: one_list for d in ("s2t", "t2s", "s2s", "t2t")}, tiny_tokenizer)
    batches = list(build_dataloader(ds, num_workers=0))
    got = collections.Counter(k for b in batches for k in b.keys)
    types = {b.keys[0][:3]: {x.output_type for x in batches if x.keys[0][:3] == b.keys[0][:3]} for b in batches}
    assert got == collections.Counter({f"{d}{i}": 1 for d in ("s2t", "t2s", "s2s", "t2t") for i in range(3)})
    assert types == {"s2t": {"text"}, "t2s": {"text2token"}, "s2s": {"speech2text_token"}, "t2t": {"text2text"}}
    assert len(reads) == 12 and set(reads.values()) == {1}  # every line of the list read once
    assert len(decodes) == 6 and set(decodes.values()) == {1}  # the 6 speech-input samples, once each
    assert ds.skip_counts() == {}


def test_other_directions_are_dropped_before_their_audio_is_decoded(one_list, data_config, tiny_tokenizer, counted):
    _, decodes = counted
    ds = build_dataset(data_config, "raw", {"t2t": one_list}, tiny_tokenizer)
    assert sorted(k for b in ds for k in b.keys) == ["t2t0", "t2t1", "t2t2"]
    assert decodes == {} and ds.skip_counts() == {"mix_category": 9}


def test_shared_list_and_own_list_mix(one_list, corpus, data_config, tiny_tokenizer, counted, tmp_path):
    reads, _ = counted
    corpus.lines = []
    corpus.add("own_s2t")
    own = str(corpus.write("own.list"))
    ds = build_dataset(data_config, "raw", {"s2t": own, "t2s": one_list, "t2t": one_list}, tiny_tokenizer)
    keys = sorted(k for b in ds for k in b.keys)
    assert keys == ["own_s2t"] + [f"t2s{i}" for i in range(3)] + [f"t2t{i}" for i in range(3)]
    assert set(reads.values()) == {1}
    assert sorted(ds.datasets) == ["s2t", "t2s+t2t"]


def test_different_weights_on_one_list_are_refused(one_list, data_config, tiny_tokenizer):
    cfg = copy.deepcopy(data_config)
    cfg["dataset_conf"]["mix_weights"] = {"s2t": 3, "t2t": 1}
    with pytest.raises(ConfigError, match="s2t, t2t read the same list"):
        build_dataset(cfg, "raw", {"s2t": one_list, "t2t": one_list}, tiny_tokenizer)
    cfg["dataset_conf"]["mix_weights"] = {"s2t": 2, "t2t": 2}
    assert build_dataset(cfg, "raw", {"s2t": one_list, "t2t": one_list}, tiny_tokenizer).weights == {"s2t+t2t": 4.0}
