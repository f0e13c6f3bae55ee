"""compute_loss on real small data: upstream's published sample lists, a
multi-turn dialogue read from a shard, and batches of two with padding."""
import copy
import json
import os
import sys

import numpy as np
import pytest
import soundfile
import torch
import yaml

from osum_echat.bin import compute_loss
from osum_echat.data.dataset import build_dataset, one_by_one_config
from osum_echat.models.checkpoint import save_checkpoint
from osum_echat.tasks import get_task

sys.path.insert(0, os.path.dirname(__file__))
from osum_model_helpers import tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def setup(tiny_config, tmp_path_factory):
    """Tiny config able to read the released data (4097 speech codes), a checkpoint of it."""
    d = tmp_path_factory.mktemp("cl")
    cfg = copy.deepcopy(tiny_config)
    cfg["speech_token_num"] = cfg["dataset_conf"]["speech_token_num"] = 4097
    path = d / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    model = tiny_model(cfg, seed=7).eval()
    save_checkpoint(model.state_dict(), d / "ckpt.pt")
    return cfg, str(path), str(d / "ckpt.pt"), model, d


def _run(setup, data_type, data, root=None, out_name="out.jsonl", config_path=None):
    cfg, cfg_path, ckpt, _, d = setup
    out = d / out_name
    argv = ["--config", config_path or cfg_path, "--checkpoint", ckpt, "--data_type", data_type,
            "--data", str(data), "--output", str(out)]
    if root:
        argv += ["--root", str(root)]
    assert compute_loss.main(argv) == 0
    return [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def upstream_root(shared_dir, tmp_path):
    (tmp_path / "up" / "common_utils").mkdir(parents=True)
    os.symlink(shared_dir / "upstream_fake_data", tmp_path / "up" / "common_utils" / "fake_data")
    return tmp_path / "up"


def test_upstream_sample_lists(setup, shared_dir, upstream_root):
    cfg, _, _, model, _ = setup
    raw_list = shared_dir / "upstream_fake_data" / "raw" / "data.list"
    keys = [json.loads(x)["key"] for x in raw_list.read_text(encoding="utf-8").splitlines()]
    raw = _run(setup, "raw", raw_list, root=upstream_root)
    assert [r["key"] for r in raw] == keys  # input order, nothing dropped
    for r in raw:
        assert r["output_type"] == get_task(r["task"]).output_type
        assert np.isfinite(r["loss"]) and r["loss"] > 0
    # the same numbers straight from the model on the pipeline's batch
    conf = one_by_one_config(cfg)
    batch = next(iter(build_dataset(conf, "raw", str(raw_list), model.tokenizer, root=str(upstream_root),
                                    mode="infer")))
    with torch.no_grad():
        direct = model(batch)
    assert raw[0]["loss"] == pytest.approx(float(direct["loss"]), rel=1e-6)
    # counted positions: text labels (minus "&&") then every speech code
    text = batch.target[0, : int(batch.target_lengths[0])]
    expect = int((text != model.text_ids.unk_tag).sum()) + int(batch.speech_tokens_length[0])
    assert raw[0]["num_target_tokens"] == direct["num_tokens"] == expect
    # the published shard holds the same utterances: same losses
    shard_list = upstream_root / "shards.list"
    shard_list.write_text(str(shared_dir / "upstream_fake_data" / "shard" / "shards_000000000.tar") + "\n")
    shard = _run(setup, "shard", shard_list, out_name="shard.jsonl")
    assert [r["key"] for r in shard] == keys
    # (the shard stores its own copy of the audio, so allow for encoding differences)
    assert [r["loss"] for r in shard] == pytest.approx([r["loss"] for r in raw], rel=1e-4)


def _wav(path, seconds, freq):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 16000)) / 16000
    soundfile.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)
    return path.name


def test_multi_turn_dialogue_from_a_shard(setup, tmp_path):
    from common_utils.convert import raw_to_shard

    cfg, _, _, _, _ = setup
    g = np.random.default_rng(0)
    codes = lambda n: g.integers(0, 4096, n).tolist()  # noqa: E731
    for name, sec, f in (("h1", 0.4, 300), ("h2", 0.3, 500), ("cur", 0.6, 400)):
        _wav(tmp_path / "wav" / f"{name}.wav", sec, f)
    line = {"key": "dlg", "txt": "third reply", "task": "<S2TCHAT> <TEXT2TOKEN>", "wav": "wav/cur.wav",
            "extra": {"speech_token": codes(60), "speech_token_1": codes(40), "speech_token_2": codes(50)},
            "history": [{"wav": "wav/h1.wav", "txt": "first reply"}, {"wav": "wav/h2.wav", "txt": "second"}]}
    (tmp_path / "data.list").write_text(json.dumps(line) + "\n", encoding="utf-8")
    shard_list, skipped = raw_to_shard(str(tmp_path / "data.list"), str(tmp_path / "shards"), root=str(tmp_path))
    assert not skipped
    expanded = copy.deepcopy(cfg)
    expanded["dataset_conf"]["expand_dialogue_prefix"] = {"enable": True, "max_turn": 0, "min_turn": 1,
                                                          "keep_final": True}
    conf_path = tmp_path / "expand.yaml"
    conf_path.write_text(yaml.safe_dump(expanded), encoding="utf-8")
    rows = _run(setup, "shard", shard_list, config_path=str(conf_path), out_name="dlg.jsonl")
    # one line per prefix, all under the dialogue's key (as upstream names them), turn 1 first
    assert [r["key"] for r in rows] == ["dlg"] * 3
    assert [r["output_type"] for r in rows] == ["speech2text_token"] + ["speech2text_token_history"] * 2
    assert len({r["loss"] for r in rows}) == 3 and all(np.isfinite(r["loss"]) for r in rows)
    # later turns learn longer answers: "third reply" + 60 codes is the last one
    assert rows[0]["num_target_tokens"] != rows[2]["num_target_tokens"]


def test_batch_of_two_is_token_weighted_mean(setup, tmp_path):
    cfg, _, _, model, _ = setup
    lines = []
    for key, sec, f, txt in (("a", 0.7, 300, "the weather is nice"), ("b", 0.5, 500, "good morning")):
        lines.append(json.dumps({"key": key, "txt": txt, "task": "<TRANSCRIBE>",
                                 "wav": "wav/" + _wav(tmp_path / "wav" / f"{key}.wav", sec, f)}))
    (tmp_path / "two.list").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = _run(setup, "raw", tmp_path / "two.list", root=tmp_path, out_name="two.jsonl")
    conf = one_by_one_config(cfg)
    conf["dataset_conf"]["batch_conf"]["batch_size"] = 2
    (batch,) = list(build_dataset(conf, "raw", str(tmp_path / "two.list"), model.tokenizer, root=str(tmp_path),
                                  mode="infer"))
    assert batch.feats.shape[0] == 2 and int(batch.feats_lengths.min()) < batch.feats.shape[1]  # padded
    with torch.no_grad():
        whole = model(batch)
    total = sum(r["num_target_tokens"] for r in rows)
    assert whole["num_tokens"] == total
    mean = sum(r["loss"] * r["num_target_tokens"] for r in rows) / total
    assert float(whole["loss"]) == pytest.approx(mean, rel=1e-5)
