"""Instant resume: features computed at padding time (audio.LazyFeat) give the eager pipeline's
batches, and a worker told to pass over its first batches (skip_batches) yields SkippedBatch markers
for them and then exactly the batches of an uninterrupted run, on raw and shard lists, 2 ranks x 2
workers, with shuffle, sort, dynamic batching and spec_aug/sub/trim on."""
import collections
import copy
import io
import json
import tarfile

import pytest
import torch

from osum_echat.data import processors as P
from osum_echat.data.batch import Batch, SkippedBatch
from osum_echat.data.dataset import build_dataloader, build_dataset

TOKENS = list(range(10, 60))
RATES = (16000, 24000, 22050, 8000)


def _sample(i):
    """Speech->text at several rates and lengths, some text->text and text->speech-token ones."""
    if i % 5 == 3:
        return {"key": f"t{i:02d}", "txt": f"answer {i}", "task": "<TEXT2TEXT>",
                "extra": {"question": f"question {i}"}}
    if i % 5 == 4:
        return {"key": f"s{i:02d}", "txt": f"say {i}", "task": "<TEXT2TOKEN>",
                "extra": {"speech_token": TOKENS[: 10 + i]}}
    return {"key": f"u{i:02d}", "txt": f"number {i}", "task": "<TRANSCRIBE>"}


@pytest.fixture
def lists(corpus, tmp_path):
    """The same 40 samples as a raw list and as 4 shards."""
    tars = [[] for _ in range(4)]
    for i in range(40):
        obj = _sample(i)
        if obj["task"] == "<TRANSCRIBE>":
            corpus.add(obj["key"], txt=obj["txt"], seconds=0.3 + 0.037 * i, rate=RATES[i % len(RATES)])
            wav = (corpus.root / f"wav/{obj['key']}.wav").read_bytes()
        else:
            corpus.add(obj["key"], txt=obj["txt"], task=obj["task"], extra=obj["extra"], wav=False)
            wav = None
        members = [("txt", obj["txt"]), ("task", obj["task"])]
        members += [("extra", json.dumps(obj["extra"]))] if "extra" in obj else []
        tars[i % 4] += [(f"{obj['key']}.{k}", v.encode()) for k, v in members]
        tars[i % 4] += [(f"{obj['key']}.wav", wav)] if wav is not None else []
    raw = corpus.write()
    shard_list = tmp_path / "shards.list"
    names = []
    for n, members in enumerate(tars):
        path = tmp_path / f"shard_{n}.tar"
        with tarfile.open(path, "w") as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        names.append(str(path))
    shard_list.write_text("".join(x + "\n" for x in names))
    return {"raw": str(raw), "shard": str(shard_list)}


@pytest.fixture
def busy_config(data_config):
    cfg = copy.deepcopy(data_config)
    conf = cfg["dataset_conf"]
    conf.update(shuffle=True, shuffle_conf={"shuffle_size": 7}, sort=True, sort_conf={"sort_size": 5},
                batch_conf={"batch_type": "dynamic", "max_frames_in_batch": 300},
                spec_aug=True, spec_aug_conf={"num_t_mask": 2, "num_f_mask": 2, "max_t": 10, "max_f": 5},
                spec_sub=True, spec_sub_conf={"max_t": 5, "num_t_sub": 2},
                spec_trim=True, spec_trim_conf={"max_t": 8}, resample_conf={"resample_rate": 16000})
    return cfg


def assert_same(a, b):
    assert isinstance(a, Batch) and isinstance(b, Batch)
    assert a.keys == b.keys and a.task == b.task and a.output_type == b.output_type and a.txts == b.txts
    for field in ("feats", "feats_lengths", "target", "target_lengths", "speech_tokens", "speech_tokens_length",
                  "prompt", "prompt_lengths"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None and y is None) or torch.equal(x, y), field


def eager_batches(ds):
    return list(ds.batches(ds.samples(lazy=False)))  # padded as the pipeline did before LazyFeat


@pytest.mark.parametrize("data_type", ["raw", "shard"])
@pytest.mark.parametrize("feats_type", ["log_mel_spectrogram", "fbank"])
def test_lazy_features_equal_eager_ones(lists, busy_config, tiny_tokenizer, data_type, feats_type):
    cfg = copy.deepcopy(busy_config)
    cfg["dataset_conf"]["feats_type"] = feats_type
    for rank in range(2):
        ds = build_dataset(cfg, data_type, lists[data_type], tiny_tokenizer, rank=rank, world_size=2)
        ds.set_epoch(2)
        eager, lazy = eager_batches(ds), list(ds)
        assert len(lazy) == len(eager) > 3
        for a, b in zip(lazy, eager):
            assert_same(a, b)
        # the augmentation did run: spec_trim shortened features below the untrimmed length
        cfg_plain = copy.deepcopy(cfg)
        cfg_plain["dataset_conf"].update(spec_aug=False, spec_sub=False, spec_trim=False)
        plain = build_dataset(cfg_plain, data_type, lists[data_type], tiny_tokenizer, rank=rank, world_size=2)
        plain.set_epoch(2)
        frames = {k: int(n) for b in plain for k, n in zip(b.keys, b.feats_lengths)}
        trimmed = {k: int(n) for b in lazy for k, n in zip(b.keys, b.feats_lengths)}
        assert any(trimmed[k] < frames[k] for k in trimmed if k in frames)


@pytest.mark.parametrize("data_type", ["raw", "shard"])
def test_seek_gives_the_uninterrupted_batches_2_ranks_x_2_workers(lists, busy_config, tiny_tokenizer, data_type):
    for rank in range(2):
        def loader(skip=None):
            ds = build_dataset(busy_config, data_type, lists[data_type], tiny_tokenizer, rank=rank, world_size=2)
            ds.set_epoch(1)
            if skip is not None:
                assert ds.skip_batches(skip)
            return list(build_dataloader(ds, num_workers=2, prefetch=2))

        full = loader()
        assert {b.worker for b in full} == {0, 1} and len(full) >= 4
        for k in (1, 2, len(full) // 2 + 1, len(full) - 1):
            done = collections.Counter(b.worker for b in full[:k])
            resumed = loader(dict(done))
            assert len(resumed) == len(full)
            assert all(isinstance(x, SkippedBatch) for x in resumed[:k])
            assert [x.worker for x in resumed[:k]] == [b.worker for b in full[:k]]
            assert [x.size for x in resumed[:k]] == [len(b) for b in full[:k]]
            for a, b in zip(resumed[k:], full[k:]):
                assert_same(a, b)


def test_fbank_dither_is_not_deferred(lists, busy_config, tiny_tokenizer):
    """Dither noise comes from torch's global generator in sample order: no seeking there."""
    cfg = copy.deepcopy(busy_config)
    cfg["dataset_conf"].update(feats_type="fbank", fbank_conf={"num_mel_bins": 80, "dither": 1.0})
    ds = build_dataset(cfg, "raw", lists["raw"], tiny_tokenizer)
    assert not ds.skip_batches({0: 1})
    assert not any(isinstance(s["feat"], P.LazyFeat) for s in ds.samples(lazy=True))


class Recorder(torch.nn.Module):
    """Records what each trained batch held; a loss that depends on the features."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.seen = []

    def forward(self, batch):
        self.seen.append((tuple(batch.keys), batch.feats.clone(), batch.target.clone()))
        x = batch.feats.mean() if batch.feats.numel() else torch.zeros(())
        return {"loss": (self.w * x - 1) ** 2, "num_tokens": len(batch), "output_type": batch.output_type}


@pytest.mark.parametrize("data_type", ["raw", "shard"])
def test_trainer_resume_seeks_and_trains_on_the_uninterrupted_batches(lists, busy_config, tiny_tokenizer,
                                                                       tmp_path, caplog, data_type):
    from osum_echat.train.engines import build_engine
    from osum_echat.train.scheduler import WarmupLR
    from osum_echat.train.trainer import Trainer

    def trainer(model_dir, **conf):
        model = Recorder()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        config = dict(accum_grad=1, grad_clip=5.0, log_interval=100, save_interval=5, max_epoch=2,
                      keep_checkpoint_max=50, train_conf={"cv_at_start": False}, **conf)
        engine = build_engine("single", model, opt, WarmupLR(opt, warmup_steps=2), torch.device("cpu"), config)
        ds = build_dataset(busy_config, data_type, lists[data_type], tiny_tokenizer)
        return Trainer(engine, ds, build_dataloader(ds, num_workers=2, prefetch=2), None, config,
                       str(model_dir)), model

    straight, seen_straight = trainer(tmp_path / "a")
    straight.fit()
    per_epoch = straight.state.step // 2
    assert per_epoch > 6
    stop = per_epoch + 4  # max_steps: a checkpoint a few batches into epoch 1
    first, _ = trainer(tmp_path / "b", max_steps=stop)
    first.fit()
    second, seen_second = trainer(tmp_path / "b")
    assert second.resume() and second.state.epoch == 1
    k = second.state.batch_idx
    assert k > 1
    with caplog.at_level("INFO"):
        second.fit()
    assert f"resume: skipped {k} batches of epoch 1" in caplog.text
    tail = seen_straight.seen[stop:]
    assert len(seen_second.seen) == len(tail)
    for (ka, fa, ta), (kb, fb, tb) in zip(seen_second.seen, tail):
        assert ka == kb and torch.equal(fa, fb) and torch.equal(ta, tb)
    torch.testing.assert_close(second.engine.module.w, straight.engine.module.w, rtol=0, atol=0)


def test_seek_through_four_way_mixing(lists, busy_config, tiny_tokenizer):
    mix = {"s2t": lists["raw"], "t2s": lists["raw"], "t2t": lists["raw"]}  # each keeps its own direction

    def loader(skip=None):
        ds = build_dataset(busy_config, "raw", mix, tiny_tokenizer, rank=1, world_size=2)
        ds.set_epoch(1)
        if skip is not None:
            assert ds.skip_batches(skip)
        return list(build_dataloader(ds, num_workers=2, prefetch=2))

    full = loader()
    assert {b.output_type for b in full} == {"text", "text2token", "text2text"}
    for k in (1, len(full) // 2, len(full) - 1):
        resumed = loader(dict(collections.Counter(b.worker for b in full[:k])))
        assert len(resumed) == len(full) and all(isinstance(x, SkippedBatch) for x in resumed[:k])
        for a, b in zip(resumed[k:], full[k:]):
            assert_same(a, b)


# ---------------------------------------------------------------- data index (data/data_index.py)

def _bad_audio_list(raw_list, tmp_path):
    """The raw list plus audio that is corrupt, NaN, and missing (skipped, counted)."""
    import numpy as np
    import soundfile
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    soundfile.write(str(bad / "nan.wav"), np.full(8000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    lines = [json.dumps({"key": f"bad_{name}{i}", "wav": str(bad / f"{name}.wav"), "txt": f"bad {name}",
                         "task": "<TRANSCRIBE>"}) for name in ("corrupt", "nan", "missing") for i in range(3)]
    path = tmp_path / "with_bad.list"
    path.write_text(open(raw_list).read() + "".join(x + "\n" for x in lines))
    return str(path)


def _run(config, data_type, path, tokenizer, index=None, skip=None, workers=2):
    ds = build_dataset(config, data_type, path, tokenizer, rank=1, world_size=2)
    ds.use_data_index(index)
    ds.set_epoch(1)
    if skip is not None:
        assert ds.skip_batches(skip)
    return list(build_dataloader(ds, num_workers=workers, prefetch=2)), ds.skip_counts()


@pytest.mark.parametrize("data_type", ["raw", "shard"])
def test_seek_with_the_data_index_present_absent_partial_or_torn(lists, busy_config, tiny_tokenizer, tmp_path,
                                                                 data_type):
    path = _bad_audio_list(lists["raw"], tmp_path) if data_type == "raw" else lists["shard"]
    full, counts = _run(busy_config, data_type, path, tiny_tokenizer)
    if data_type == "raw":
        assert {"bad_audio", "nan_audio", "missing_file"} <= set(counts)
    index = tmp_path / "index"
    first, first_counts = _run(busy_config, data_type, path, tiny_tokenizer, index)  # writes the index
    assert first_counts == counts and len(first) == len(full)
    for a, b in zip(first, full):
        assert_same(a, b)  # the uninterrupted run's batches do not change
    files = sorted(index.rglob("*.txt"))
    assert [f.name for f in files] == ["r1w0.txt", "r1w1.txt"]
    partial = tmp_path / "partial" / files[0].parent.name
    partial.mkdir(parents=True)
    for f in files:  # half of each file, then a line torn by a kill mid-write
        lines = f.read_text().splitlines(keepends=True)
        (partial / f.name).write_text("".join(lines[: len(lines) // 2]) + lines[-1][:9])
    for k in (1, len(full) // 2, len(full) - 1):
        done = dict(collections.Counter(b.worker for b in full[:k]))
        for where in (index, None, tmp_path / "empty", partial.parent):
            resumed, resumed_counts = _run(busy_config, data_type, path, tiny_tokenizer, where, done)
            assert resumed_counts == counts, where
            assert len(resumed) == len(full) and all(isinstance(x, SkippedBatch) for x in resumed[:k])
            for a, b in zip(resumed[k:], full[k:]):
                assert_same(a, b)


def test_seek_with_the_index_decodes_and_tokenizes_nothing_it_knows(lists, busy_config, tiny_tokenizer, tmp_path,
                                                                    monkeypatch, caplog):
    from osum_echat.data import features

    path = _bad_audio_list(lists["raw"], tmp_path)
    index = tmp_path / "index"
    full, counts = _run(busy_config, "raw", path, tiny_tokenizer, index, workers=0)
    calls = collections.Counter()
    decode, encode = features.decode_audio, tiny_tokenizer.encode
    monkeypatch.setattr(features, "decode_audio", lambda *a: calls.update(["decode"]) or decode(*a))
    monkeypatch.setattr(tiny_tokenizer, "encode", lambda *a, **k: calls.update(["encode"]) or encode(*a, **k))
    k = len(full) - 1
    ds = build_dataset(busy_config, "raw", path, tiny_tokenizer, rank=1, world_size=2)
    ds.use_data_index(index)
    ds.set_epoch(1)
    assert ds.skip_batches({0: k})
    it = iter(ds)
    with caplog.at_level("INFO"):
        markers = [next(it) for _ in range(k)]
    assert all(isinstance(x, SkippedBatch) for x in markers) and sum(x.size for x in markers) > 10
    prompts = sum(len(v) for v in ds.prompts.values())
    assert calls["decode"] == 0 and calls["encode"] <= prompts  # each user prompt tokenized once at most
    assert "and decoded 0" in caplog.text
    assert_same(next(it), full[k])  # the batch trained on: decoded and tokenized now
    assert calls["decode"] > 0 and ds.skip_counts() == counts


def test_a_stale_index_is_not_used(lists, busy_config, tiny_tokenizer, tmp_path):
    """Audio replaced on disk after it was indexed: new facts, same batches as without an index.
    Another tokenizer: another folder."""
    import soundfile

    from osum_echat.data.data_index import DataIndex, tokenizer_id

    index = tmp_path / "index"
    _run(busy_config, "raw", lists["raw"], tiny_tokenizer, index)
    for wav in sorted((tmp_path / "wav").glob("u*.wav"))[::2]:
        audio, rate = soundfile.read(str(wav), dtype="float32")
        soundfile.write(str(wav), audio[: len(audio) * 2 // 3], rate, subtype="PCM_16")
    full, counts = _run(busy_config, "raw", lists["raw"], tiny_tokenizer)
    k = len(full) // 2
    done = dict(collections.Counter(b.worker for b in full[:k]))
    resumed, resumed_counts = _run(busy_config, "raw", lists["raw"], tiny_tokenizer, index, done)
    assert resumed_counts == counts
    for a, b in zip(resumed[k:], full[k:]):
        assert_same(a, b)
    other = copy.deepcopy(tiny_tokenizer)
    other.add_tokens(["zqxj"])
    assert tokenizer_id(other) != tokenizer_id(tiny_tokenizer)
    assert DataIndex(index, other).dir != DataIndex(index, tiny_tokenizer).dir
