"""The whole pipeline on small real corpora: bad input, work split, resume, batching, mixing."""
import collections
import copy
import io
import json
import random
import tarfile

import numpy as np
import pytest
import torch
import yaml

from osum_echat.bin import inspect_data
from osum_echat.data import features
from osum_echat.data.dataset import build_dataloader, build_dataset

TOKENS = list(range(10, 90))  # valid for the tiny config's speech_token_num


def run_inspect(capsys, config_path, data_type, data, root=None, overrides=()):
    argv = ["--config", str(config_path), "--data_type", data_type, "--data", str(data)]
    if root:
        argv += ["--root", str(root)]
    for o in overrides:
        argv += ["--override", o]
    inspect_data.main(argv)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    return lines[:-1], lines[-1]


def keys_of(dataset):
    return [k for batch in dataset for k in batch.keys]


def test_mixed_valid_and_broken_raw_list(corpus, wav_writer, capsys, repo_root):
    valid = []
    for i in range(4):
        valid.append(corpus.add(f"asr{i}", txt=f"utterance {i}")["key"])
    valid.append(corpus.add("tts", task="<TEXT2TOKEN>", wav=False, extra={"speech_token": TOKENS})["key"])
    valid.append(corpus.add("t2t", txt="an answer", task="<TEXT2TEXT>", wav=False,
                            extra={"question": "a question"})["key"])
    valid.append(corpus.add("s2s", txt="reply", task="<S2TCHAT> <TEXT2TOKEN>",
                            extra=json.dumps({"speech_token": TOKENS}))["key"])
    corpus.add_line("{not json")
    corpus.add_line(json.dumps({"txt": "no key", "wav": "wav/asr0.wav"}))
    corpus.add("missing_wav", wav=False)
    corpus.lines.append(json.dumps({"key": "gone", "wav": "wav/does_not_exist.wav", "txt": "x"}))
    wav_writer(corpus.root / "wav/empty.wav", values=np.zeros(0, dtype=np.float32))
    corpus.lines.append(json.dumps({"key": "empty", "wav": "wav/empty.wav", "txt": "x"}))
    nan = np.zeros(8000, dtype=np.float32)
    nan[100] = np.nan
    wav_writer(corpus.root / "wav/nan.wav", values=nan)
    corpus.lines.append(json.dumps({"key": "nan", "wav": "wav/nan.wav", "txt": "x"}))
    (corpus.root / "wav/garbage.wav").write_bytes(b"RIFF....not audio at all")
    corpus.lines.append(json.dumps({"key": "garbage", "wav": "wav/garbage.wav", "txt": "x"}))
    corpus.add("tts_no_tokens", task="<TEXT2TOKEN>", wav=False, extra={})
    corpus.add("think_no_str", task="<S2TCHAT> <THINKER>", extra={})
    corpus.add("t2t_no_q", task="<TEXT2TEXT>", wav=False, extra={})
    corpus.add("bad_tok", task="<S2TCHAT> <TEXT2TOKEN>", extra={"speech_token": [1, 2, 100000]})
    corpus.add("str_tok", task="<TEXT2TOKEN>", wav=False, extra={"speech_token": ["a", "b"]})
    corpus.add("who", task="<TRANSCRIBE>", txt="I am ChatGPT")
    valid.append(corpus.add("what", task="<DANCE>")["key"])  # unknown tag: speech -> text, as upstream
    path = corpus.write()

    rows, summary = run_inspect(capsys, repo_root / "conf/tiny_ct_config.yaml", "raw", path,
                                overrides=["dataset_conf.filter_conf.min_length=1"])
    assert sorted(r["key"] for r in rows) == sorted(valid)
    assert summary == {"samples": len(valid), "skipped": {
        "bad_json": 1, "no_key": 1, "missing_audio": 1, "missing_file": 1, "empty_audio": 1, "nan_audio": 1,
        "bad_audio": 1, "missing_field": 3, "bad_speech_token": 2, "other_assistant": 1}}
    by_key = {r["key"]: r for r in rows}
    assert by_key["tts"]["num_frames"] == 0 and by_key["tts"]["num_speech_tokens"] == len(TOKENS) + 2
    assert by_key["asr0"]["num_frames"] == 8000 // 160
    assert by_key["s2s"]["output_type"] == "speech2text_token"
    assert by_key["what"]["output_type"] == "text"


def _make_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _members(key, wav_bytes, txt="hi there", task="<TRANSCRIBE>", extra=None):
    out = [(f"{key}.txt", txt.encode()), (f"{key}.wav", wav_bytes), (f"{key}.task", task.encode()),
           (f"{key}.lang", b"en")]
    if extra is not None:
        out.append((f"{key}.extra", extra if isinstance(extra, bytes) else json.dumps(extra).encode()))
    return out


def test_mixed_valid_and_broken_shards(tmp_path, wav_writer, capsys, repo_root):
    wav = wav_writer(tmp_path / "a.wav").read_bytes()
    good = tmp_path / "good.tar"
    _make_tar(good, _members("g1", wav) + _members("g2", wav, extra=b"{broken json")
              + _members("g3", wav, task="<TEXT2TOKEN>", extra={"speech_token": TOKENS})
              + [("g4.txt", b"no audio"), ("g4.task", b"<TRANSCRIBE>")])
    whole = tmp_path / "whole.tar"
    _make_tar(whole, [m for k in ("t1", "t2", "t3") for m in _members(k, wav)])
    data = whole.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: int(len(data) * 0.8)])  # t3 (and maybe part of t2) lost
    listing = tmp_path / "shards.list"
    listing.write_text(f"{good}\n{tmp_path / 'missing.tar'}\n{cut}\n")
    rows, summary = run_inspect(capsys, repo_root / "conf/tiny_ct_config.yaml", "shard", listing)
    keys = [r["key"] for r in rows]
    assert keys[:2] == ["g1", "g3"] and "t1" in keys and "t3" not in keys
    assert summary["skipped"]["bad_json"] == 1
    assert summary["skipped"]["missing_audio"] == 1
    assert summary["skipped"]["missing_file"] == 1
    assert summary["skipped"]["corrupt_tar"] == 1
    assert summary["samples"] == len(keys)


def test_upstream_samples_all_come_out(upstream_root, shared_dir, tmp_path, capsys, repo_root):
    conf = repo_root / "conf/tiny_ct_config.yaml"
    over = []  # the tiny config as it is: its speech_token_num covers the published 4096 codes
    fake = shared_dir / "upstream_fake_data"
    rows, summary = run_inspect(capsys, conf, "raw", fake / "raw/data.list", upstream_root, over)
    assert summary == {"samples": 10, "skipped": {}}
    assert {r["output_type"] for r in rows} == {"speech2text_token_think"}
    assert all(r["num_frames"] == 1096 for r in rows)  # 11 s at 24 kHz, resampled to 16 kHz
    rows, summary = run_inspect(capsys, conf, "shard", fake / "combine/combines_list.txt", upstream_root, over)
    assert summary == {"samples": 10, "skipped": {}} and {r["task"] for r in rows} == {"<TRANSCRIBE>"}
    # the published shard list names a tar that does not exist: reported, not fatal
    rows, summary = run_inspect(capsys, conf, "shard", fake / "shard/shards_list.txt", upstream_root, over)
    assert summary == {"samples": 0, "skipped": {"missing_file": 1}}
    fixed = tmp_path / "shards_list.txt"
    fixed.write_text(str(fake / "shard/shards_000000000.tar") + "\n")
    rows, summary = run_inspect(capsys, conf, "shard", fixed, None, over)
    assert summary == {"samples": 10, "skipped": {}}
    assert [r["key"] for r in rows] == [f"1023390_bed51684_{i}" for i in range(1, 11)]
    assert {r["num_speech_tokens"] for r in rows} == {421 + 2}


@pytest.fixture
def twelve(corpus):
    for i in range(12):
        corpus.add(f"u{i:02d}", txt=f"number {i}", seconds=0.2 + 0.05 * i)
    return corpus.write()


def test_each_entry_read_once_across_2_ranks_x_2_workers(twelve, data_config, tiny_tokenizer):
    cfg = copy.deepcopy(data_config)
    cfg["dataset_conf"]["shuffle"] = True
    seen = collections.Counter()
    for rank in range(2):
        ds = build_dataset(cfg, "raw", str(twelve), tiny_tokenizer, rank=rank, world_size=2)
        ds.set_epoch(3)
        for batch in build_dataloader(ds, num_workers=2, prefetch=2):
            seen.update(batch.keys)
    assert seen == collections.Counter({f"u{i:02d}": 1 for i in range(12)})


def test_epoch_seeded_shuffle_and_resume(twelve, data_config, tiny_tokenizer):
    cfg = copy.deepcopy(data_config)
    cfg["dataset_conf"]["shuffle"] = True
    cfg["dataset_conf"]["shuffle_conf"] = {"shuffle_size": 1}  # keep list order visible
    ds = build_dataset(cfg, "raw", str(twelve), tiny_tokenizer)
    ds.set_epoch(0)
    order0 = keys_of(ds)
    assert keys_of(ds) == order0
    ds.set_epoch(1)
    order1 = keys_of(ds)
    assert sorted(order0) == sorted(order1) and order0 != order1
    ds.set_epoch(1, start_index=5)
    rest = keys_of(ds)
    assert sorted(rest) == sorted(order1[5:])


@pytest.mark.parametrize("mode", ["eval", "infer"])
def test_eval_prompts_are_upstreams_seeded_draws(twelve, data_config, tiny_tokenizer, repo_root, mode):
    """Outside training the prompt of the i-th prompted sample is upstream's i-th
    random.randint(0, n-1) after random.seed(seed), whatever the epoch."""
    cfg = copy.deepcopy(data_config)
    cfg["seed"] = 777
    choices = yaml.safe_load((repo_root / "conf/prompt_config.yaml").read_text(encoding="utf-8"))["<TRANSCRIBE>"]
    assert len(choices) > 1
    draws = random.Random(777)
    expected = [tiny_tokenizer.encode(choices[draws.randint(0, len(choices) - 1)], add_special_tokens=False)
                for _ in range(12)]


    def prompts_in_data_order(ds):  # a batch sorts its items by length: put them back in list order
        by_key = {k: b.prompt[i, :b.prompt_lengths[i]].tolist() for b in ds for i, k in enumerate(b.keys)}
        return [by_key[f"u{i:02d}"] for i in range(12)]

    ds = build_dataset(cfg, "raw", str(twelve), tiny_tokenizer, mode=mode)
    for epoch in (0, 3):
        ds.set_epoch(epoch)
        assert prompts_in_data_order(ds) == expected
    cfg["seed"] = 778
    assert prompts_in_data_order(build_dataset(cfg, "raw", str(twelve), tiny_tokenizer, mode=mode)) != expected


def test_batches_hold_one_output_type_and_partial_batches_are_kept(corpus, data_config, tiny_tokenizer):
    for i in range(5):
        corpus.add(f"asr{i}")
    for i in range(3):
        corpus.add(f"tts{i}", task="<TEXT2TOKEN>", wav=False, extra={"speech_token": TOKENS})
    ds = build_dataset(data_config, "raw", str(corpus.write()), tiny_tokenizer)
    batches = list(ds)
    assert sum(len(b) for b in batches) == 8
    for b in batches:
        assert len(set(b.task)) == 1 and len(b) <= 2
        if b.output_type == "text2token":
            assert b.feats.shape[1] == 0 and b.prompt is None and "prompt" not in b
            assert b.speech_tokens[0, 0] == data_config["speech_token_num"] - 1
        else:
            assert b.prompt is not None and (b.feats_lengths[:-1] >= b.feats_lengths[1:]).all()
            assert (b.target == -100).sum() == (b.target_lengths.max() - b.target_lengths).sum()
    assert sorted(len(b) for b in batches) == [1, 1, 2, 2, 2]


def test_dynamic_batch_respects_the_frame_budget(twelve, data_config, tiny_tokenizer):
    cfg = copy.deepcopy(data_config)
    cfg["dataset_conf"]["sort"] = True
    cfg["dataset_conf"]["batch_conf"] = {"batch_type": "dynamic", "max_frames_in_batch": 200,
                                         "max_seq_in_batch": 100000}
    batches = list(build_dataset(cfg, "raw", str(twelve), tiny_tokenizer))
    assert sum(len(b) for b in batches) == 12
    for b in batches:
        assert len(b) == 1 or int(b.feats_lengths.max()) * len(b) <= 200
    assert any(len(b) > 1 for b in batches)


def test_spec_augmentation_is_seeded(twelve, data_config, tiny_tokenizer):
    cfg = copy.deepcopy(data_config)
    cfg["dataset_conf"].update(spec_aug=True, spec_sub=True, spec_trim=False)
    plain = build_dataset(data_config, "raw", str(twelve), tiny_tokenizer, mode="train")
    aug = build_dataset(cfg, "raw", str(twelve), tiny_tokenizer, mode="train")
    a, b, c = list(plain), list(aug), list(aug)
    assert all(torch.equal(x.feats, y.feats) for x, y in zip(b, c))
    assert any(not torch.equal(x.feats, y.feats) for x, y in zip(a, b))
    evaluation = build_dataset(cfg, "raw", str(twelve), tiny_tokenizer, mode="eval")
    assert all(torch.equal(x.feats, y.feats) for x, y in zip(a, evaluation))


def test_four_way_mixing_reads_each_list_once(tmp_path, corpus, data_config, tiny_tokenizer):
    lists = {}
    for name, task, extra, wav in (("s2t", "<TRANSCRIBE>", None, True),
                                   ("t2s", "<TEXT2TOKEN>", {"speech_token": TOKENS}, False),
                                   ("s2s", "<S2TCHAT> <TEXT2TOKEN>", {"speech_token": TOKENS}, True),
                                   ("t2t", "<TEXT2TEXT>", {"question": "q?"}, False)):
        corpus.lines = []
        for i in range(3):
            corpus.add(f"{name}{i}", task=task, extra=extra, wav=wav)
        corpus.add(f"{name}_stray", task="<TRANSCRIBE>" if name != "s2t" else "<TEXT2TEXT>",
                   extra={"question": "q"}, wav=True)
        lists[name] = str(corpus.write(f"{name}.list"))
    ds = build_dataset(data_config, "raw", lists, tiny_tokenizer)
    ds.set_epoch(0)
    got = collections.Counter()
    types = collections.defaultdict(set)
    for batch in build_dataloader(ds, num_workers=2):
        got.update(batch.keys)
        types[batch.keys[0][:3]].add(batch.output_type)
    assert set(got) == {f"{n}{i}" for n in lists for i in range(3)} and set(got.values()) == {1}
    assert types == {"s2t": {"text"}, "t2s": {"text2token"}, "s2s": {"speech2text_token"}, "t2t": {"text2text"}}
    assert ds.skip_counts() == {"mix_category": 4}


def test_batch_to_and_dict_access(twelve, data_config, tiny_tokenizer):
    batch = next(iter(build_dataset(data_config, "raw", str(twelve), tiny_tokenizer)))
    moved = batch.to("cpu")
    assert torch.equal(moved["feats"], batch.feats) and moved["output_type"] == "text"
    assert batch.feats.dtype == torch.float32 and batch.feats_lengths.dtype == torch.int32
    assert batch.target.dtype == torch.int64 and batch.feats.shape[-1] == 80


def test_history_turns_become_features_and_expand_makes_prefixes(corpus, data_config, tiny_tokenizer, wav_writer):
    for name in ("h1", "h2"):
        wav_writer(corpus.root / f"wav/{name}.wav", seconds=0.3)
    extra = {"speech_token": TOKENS, "speech_token_1": TOKENS[:30], "speech_token_2": TOKENS[:40]}
    corpus.add("dlg", txt="third reply", task="<S2TCHAT> <TEXT2TOKEN>", extra=extra,
               history=[{"wav": "wav/h1.wav", "txt": "first reply"}, {"wav": "wav/h2.wav", "txt": "second"}])
    path = corpus.write()
    (batch,) = list(build_dataset(data_config, "raw", str(path), tiny_tokenizer))
    assert batch.output_type == "speech2text_token_history"
    turns = batch.history[0]
    assert [t["txt"] for t in turns] == ["first reply", "second"]
    assert turns[0]["wav"].shape == (30, 80) and turns[1]["speech_token"][1:-1] == TOKENS[:40]

    cfg = copy.deepcopy(data_config)
    cfg["dataset_conf"]["expand_dialogue_prefix"] = {"enable": True, "max_turn": 0, "min_turn": 1,
                                                     "keep_final": True}
    cfg["dataset_conf"]["batch_conf"]["batch_size"] = 1
    got = {b.keys[0]: b for b in build_dataset(cfg, "raw", str(path), tiny_tokenizer)}
    assert sorted(got) == ["dlg", "dlg#turn1", "dlg#turn2"]
    assert got["dlg#turn1"].output_type == "speech2text_token" and got["dlg#turn1"].history == [[]]
    assert got["dlg#turn1"].speech_tokens[0, 1:31].tolist() == TOKENS[:30]
    assert [t["txt"] for t in got["dlg#turn2"].history[0]] == ["first reply"]
    assert len(got["dlg"].history[0]) == 2


@pytest.mark.parametrize("like_upstream", [True, False])
def test_expanded_history_turn_is_resampled_twice_like_upstream(corpus, data_config, tiny_tokenizer, wav_writer,
                                                                like_upstream):
    """upstream quirk: with a 24 kHz main wav the sample made from a history turn is resampled
    to 16 kHz and then again as if it were 24 kHz; the switch off gives correctly timed audio."""
    wav_writer(corpus.root / "wav/h24.wav", seconds=0.3, rate=24000)  # 7200 samples -> 4800 at 16 kHz
    wav_writer(corpus.root / "wav/h16.wav", seconds=0.3, rate=16000)  # 4800 samples
    for key, main_rate, turn in (("d24", 24000, "h24"), ("d24b", 24000, "h16"), ("d16", 16000, "h24")):
        corpus.add(key, txt="reply", task="<S2TCHAT>", rate=main_rate, seconds=0.5,
                   history=[{"wav": f"wav/{turn}.wav", "txt": "earlier"}])
    path = corpus.write()
    cfg = copy.deepcopy(data_config)
    cfg["dataset_conf"]["expand_dialogue_prefix"] = {"enable": True, "resample_history_like_upstream": like_upstream}
    cfg["dataset_conf"]["batch_conf"]["batch_size"] = 1
    got = {b.keys[0]: b for b in build_dataset(cfg, "raw", str(path), tiny_tokenizer, mode="eval")}
    frames = {k: int(b.feats_lengths[0]) for k, b in got.items()}
    hop = data_config["dataset_conf"].get("log_mel_spectrogram_conf", {}).get("hop_length", 160)
    once = 4800 // hop  # the turn at 16 kHz
    twice = 3200 // hop  # 4800 samples taken for 24 kHz and resampled to 16 kHz again
    assert frames["d24#turn1"] == (twice if like_upstream else once)
    assert frames["d24b#turn1"] == (twice if like_upstream else once)
    assert frames["d16#turn1"] == once  # 16 kHz main wav: upstream is right too
    # the full dialogues and their history turns are never affected
    assert frames["d24"] == frames["d16"] == 8000 // hop
    assert {b.history[0][0]["wav"].shape[0] for k, b in got.items() if "#" not in k} == {once}
    if like_upstream:
        h24, rate = features.decode_audio(str(corpus.root / "wav/h24.wav"))
        twice_wav = features.resample(features.resample(h24, rate, 16000), 24000, 16000)
        conf = data_config["dataset_conf"].get("log_mel_spectrogram_conf", {})
        expected = features.log_mel(twice_wav, conf.get("n_fft", 400), hop, conf.get("num_mel_bins", 80),
                                    conf.get("padding", 0), 16000)
        assert torch.allclose(got["d24#turn1"].feats[0], expected)


def test_batch_survives_the_trip_from_a_worker(corpus, data_config, tiny_tokenizer, wav_writer):
    import pickle

    wav_writer(corpus.root / "wav/h.wav", seconds=0.3)
    corpus.add("d", task="<S2TCHAT> <TEXT2TOKEN>", extra={"speech_token": TOKENS, "speech_token_1": TOKENS[:9]},
               history=[{"wav": "wav/h.wav", "txt": "before"}])
    corpus.add("e", task="<S2TCHAT> <TEXT2TOKEN>", extra={"speech_token": TOKENS[:50]}, seconds=0.7)
    ds = build_dataset(data_config, "raw", str(corpus.write()), tiny_tokenizer)
    local = list(ds)
    remote = list(build_dataloader(ds, num_workers=1))
    for a, b in ((x, pickle.loads(pickle.dumps(x))) for x in local):
        for field in ("feats", "feats_lengths", "target", "target_lengths", "speech_tokens",
                      "speech_tokens_length"):
            assert torch.equal(getattr(a, field), getattr(b, field)) and getattr(a, field).dtype == getattr(b, field).dtype
    a, b = local[0], remote[0]
    assert a.keys == b.keys and torch.equal(a.feats, b.feats) and torch.equal(a.speech_tokens, b.speech_tokens)
    assert [[torch.equal(x["wav"], y["wav"]) for x, y in zip(p, q)] for p, q in zip(a.history, b.history)] \
        == [[True] * len(p) for p in a.history]


def test_training_order_is_reproducible_across_runs(twelve, tmp_path, repo_root):
    """Resume replays batches, so the same (seed, epoch) must give the same stream in a new process."""
    import subprocess
    import sys

    script = tmp_path / "order.py"
    script.write_text(f"""
import json
from osum_echat.config import load_config
from osum_echat.tokenizer import load_tokenizer
from osum_echat.data.dataset import build_dataset
cfg = load_config("conf/tiny_ct_config.yaml")
cfg["dataset_conf"].update(shuffle=True, shuffle_conf={{"shuffle_size": 5}}, spec_aug=True, multi_num=1)
cfg["dataset_conf"]["filter_conf"]["min_length"] = 1
cfg["dataset_conf"]["other_tokenze_conf"] = {{"use_50_per_change_if_only_X": True}}
tok = load_tokenizer(cfg["llm_path"])
ds = build_dataset(cfg, "raw", {{"s2t": "{twelve}"}}, tok)
ds.set_epoch(2)
print(json.dumps([[b.keys, b.prompt.tolist(), float(b.feats.sum())] for b in ds]))
""")
    outs = []
    for hash_seed in ("1", "2"):
        env = dict(__import__("os").environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(repo_root))
        res = subprocess.Popen([sys.executable, str(script)], cwd=repo_root, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        outs.append(res)
    results = []
    for res in outs:
        out, err = res.communicate(timeout=120)
        assert res.returncode == 0, err[-2000:]
        results.append(out.strip().splitlines()[-1])
    assert results[0] == results[1]
    assert len(json.loads(results[0])) > 0


def test_fbank_features_option(twelve, data_config, tiny_tokenizer):
    cfg = copy.deepcopy(data_config)
    cfg["dataset_conf"]["feats_type"] = "fbank"
    cfg["dataset_conf"]["fbank_conf"] = {"num_mel_bins": 80, "frame_length": 25, "frame_shift": 10, "dither": 0.0}
    batches = list(build_dataset(cfg, "raw", str(twelve), tiny_tokenizer))
    assert sum(len(b) for b in batches) == 12
    shortest = min(int(b.feats_lengths.min()) for b in batches)
    assert shortest == 1 + (int(0.2 * 16000) - 400) // 160 and batches[0].feats.shape[-1] == 80


def test_inspect_data_names_a_missing_list(tmp_path, capsys, repo_root):
    with pytest.raises(SystemExit) as exc:
        inspect_data.main(["--config", str(repo_root / "conf/tiny_ct_config.yaml"), "--data_type", "raw",
                           "--data", str(tmp_path / "nope.list")])
    assert exc.value.code == 2
    assert "nope.list" in capsys.readouterr().err


def test_sub_epochs_and_multi_num(twelve, data_config, tiny_tokenizer):
    cfg = copy.deepcopy(data_config)
    cfg["dataset_conf"].update(shuffle=True, split_num=3, multi_num=1)
    ds = build_dataset(cfg, "raw", str(twelve), tiny_tokenizer)
    parts = []
    for epoch in range(3):  # one full pass over the shuffled list in three sub-epochs
        ds.set_epoch(epoch)
        parts.append(ds.epoch_order())
    assert sorted(i for p in parts for i in p) == list(range(12)) and all(len(p) == 4 for p in parts)
    cfg["dataset_conf"].update(split_num=1, multi_num=2)
    ds = build_dataset(cfg, "raw", str(twelve), tiny_tokenizer)
    assert sorted(ds.epoch_order()) == sorted(list(range(12)) * 2)
    assert sorted(build_dataset(cfg, "raw", str(twelve), tiny_tokenizer, mode="eval").epoch_order()) == list(range(12))


@pytest.mark.parametrize("key,value", [("feats_type", "mfcc"), ("speed_perturb", True),
                                       ("batch_conf", {"batch_type": "bucket"})])
def test_config_mistakes_fail_before_reading_data(twelve, data_config, tiny_tokenizer, key, value):
    from osum_echat.config import ConfigError

    cfg = copy.deepcopy(data_config)
    cfg["dataset_conf"][key] = value
    with pytest.raises(ConfigError, match=key.split("_conf")[0]):
        build_dataset(cfg, "raw", str(twelve), tiny_tokenizer)


def test_raw_history_turn_with_non_string_txt_is_skipped(corpus, capsys, repo_root):
    corpus.add("turn")
    good = corpus.add("good", task="<S2TCHAT>", history=[{"wav": "wav/turn.wav", "txt": "hi"}])
    corpus.add("null_txt", task="<S2TCHAT>", history=[{"wav": "wav/turn.wav", "txt": None}])
    corpus.add("num_txt", task="<S2TCHAT>", history=[{"wav": "wav/turn.wav", "txt": 3}])
    rows, summary = run_inspect(capsys, repo_root / "conf/tiny_ct_config.yaml", "raw", corpus.write(),
                                overrides=["dataset_conf.filter_conf.min_length=1"])
    assert {r["key"] for r in rows} >= {"turn", good["key"]}
    assert "null_txt" not in {r["key"] for r in rows} and summary["skipped"] == {"bad_history": 2}


def test_expand_reads_json_string_extra_and_missing_turn_tokens_are_missing_field(corpus, data_config,
                                                                                 tiny_tokenizer, wav_writer):
    for name in ("h1", "h2"):
        wav_writer(corpus.root / f"wav/{name}.wav", seconds=0.3)
    extra = json.dumps({"speech_token": TOKENS, "speech_token_1": TOKENS[:30]})  # no speech_token_2
    corpus.add("dlg", txt="third reply", task="<S2TCHAT> <TEXT2TOKEN>", extra=extra,
               history=[{"wav": "wav/h1.wav", "txt": "first reply"}, {"wav": "wav/h2.wav", "txt": "second"}])
    path = corpus.write()
    cfg = copy.deepcopy(data_config)
    cfg["dataset_conf"]["expand_dialogue_prefix"] = {"enable": True}
    cfg["dataset_conf"]["batch_conf"]["batch_size"] = 1
    dataset = build_dataset(cfg, "raw", str(path), tiny_tokenizer)
    got = {b.keys[0]: b for b in dataset}
    assert sorted(got) == ["dlg", "dlg#turn1"]
    assert got["dlg#turn1"].speech_tokens[0, 1:31].tolist() == TOKENS[:30]
    assert dataset.counter.counts() == {"missing_field": 1}
