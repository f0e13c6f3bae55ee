"""List reading, path resolution and the three formats, plus the converters between them."""
import collections
import io
import json
import os
import tarfile

import torch

from common_utils.convert import combine_to_shard, raw_to_shard, shard_to_combine
from common_utils.load_data_yaml import yaml_to_list
from osum_echat.data import features
from osum_echat.data.skips import SkipCounter
from osum_echat.data.sources import read_entries, read_entry, resolve


def samples_of(list_path, data_type, root=None):
    counter = SkipCounter(max_workers=0)
    out = [s for e in read_entries(str(list_path), data_type, root) for s in read_entry(e, counter, root)]
    return out, counter.counts()


def test_relative_paths_resolve_root_then_list_dir_then_cwd(tmp_path, monkeypatch):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "a.wav").write_bytes(b"x")
    base = str(tmp_path / "lists")
    assert resolve("a.wav", None, base) == os.path.join(base, "a.wav")
    assert resolve("a.wav", "/data/root", base) == "/data/root/a.wav"
    monkeypatch.chdir(tmp_path)
    assert resolve("b.wav", None, base) == "b.wav"  # not next to the list: taken from the cwd
    assert resolve("/abs/c.wav", "/data/root", base) == "/abs/c.wav"


def test_raw_line_keeps_fields_and_resolves_history(corpus):
    corpus.add("k1", extra={"a": 1}, start=0.1, end=0.3, speaker="spk")
    line = json.loads(corpus.lines[0])
    line["history"] = [{"wav": "wav/k1.wav", "txt": "turn one"}]
    corpus.lines[0] = json.dumps(line)
    (s,), skipped = samples_of(corpus.write(), "raw")
    assert not skipped
    assert s["audio"] == os.path.join(str(corpus.root), "wav/k1.wav")
    assert s["speaker"] == "spk" and s["start"] == 0.1 and s["extra"] == {"a": 1}
    assert s["history"] == [{"audio": s["audio"], "txt": "turn one"}]


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_shard_members_history_and_extra_fields(tmp_path, wav_writer):
    wav = wav_writer(tmp_path / "a.wav").read_bytes()
    _tar(tmp_path / "s.tar", [("k.txt", b" hello \n"), ("k.flac", wav), ("k.task", b"<S2TCHAT>"),
                              ("k.extra", b'{"q": 1}'), ("k.emotion", b"happy"), ("k.wav_2", wav),
                              ("k.txt_2", b"second"), ("k.wav_1", wav), ("k.txt_1", b"first"),
                              ("j.txt", b"x"), ("j.wav", wav), ("j.wav_2", wav)])
    (tmp_path / "list").write_text("s.tar\n")
    samples, skipped = samples_of(tmp_path / "list", "shard")
    assert skipped == {"bad_history": 1}  # j has turn 2 but no turn 1
    (s,) = samples
    assert (s["key"], s["txt"], s["task"], s["extra"], s["emotion"]) == ("k", "hello", "<S2TCHAT>", {"q": 1}, "happy")
    assert s["audio"] == wav
    assert [t["txt"] for t in s["history"]] == ["first", "second"]


def test_combine_reads_meta_from_jsonl_and_audio_from_tar(tmp_path, wav_writer):
    wav = wav_writer(tmp_path / "a.wav").read_bytes()
    (tmp_path / "tars").mkdir()
    _tar(tmp_path / "tars" / "part1.tar", [("a.wav", wav), ("b.wav", wav), ("orphan.wav", wav)])
    meta = [{"key": "a", "txt": "A", "tas_tag": "<TRANSCRIBE>", "wav": "only-meta"},
            {"key": "b", "txt": "B", "task": "<S2TCHAT>", "extra": {"x": 1}},
            {"key": "t", "txt": "T", "task": "<TEXT2TEXT>", "extra": {"question": "q"}}]
    (tmp_path / "part1.list").write_text("".join(json.dumps(m) + "\n" for m in meta) + "not json\n")
    (tmp_path / "combines_list.txt").write_text("part1.list\n")
    (tmp_path / "combines_tar_root.txt").write_text("tars/\n")
    samples, skipped = samples_of(tmp_path / "combines_list.txt", "shard")  # shard + combines_list -> combine
    assert skipped == {"bad_json": 1, "no_metadata": 1}
    by_key = {s["key"]: s for s in samples}
    assert by_key["a"]["task"] == "<TRANSCRIBE>" and by_key["a"]["audio"] == wav
    assert by_key["b"]["extra"] == {"x": 1} and by_key["t"]["audio"] is None


def test_converters_round_trip(corpus, tmp_path):
    corpus.add("a", txt="first one", extra={"speech_token": [1, 2, 3]}, rate=24000)
    corpus.add("b", txt="second", task="<S2TCHAT>", lang="en")
    corpus.add("c", txt="cut", start=0.1, end=0.3)
    corpus.lines.append(json.dumps({"key": "gone", "wav": "wav/missing.wav", "txt": "x"}))
    raw_list = corpus.write()
    shard_list, skipped = raw_to_shard(str(raw_list), str(tmp_path / "shards"), per_shard=2)
    assert skipped == {"missing_file": 1}
    tars = shard_list.read_text().split()
    assert len(tars) == 2 and all(os.path.exists(t + ".finished") for t in tars)
    combine_list, _ = shard_to_combine(str(shard_list), str(tmp_path / "combine"))
    back_list, _ = combine_to_shard(str(combine_list), str(tmp_path / "back"))
    raw, _ = samples_of(raw_list, "raw")
    for converted, data_type in ((shard_list, "shard"), (combine_list, "combine"), (back_list, "shard")):
        got, skipped = samples_of(converted, data_type)
        assert not skipped
        assert [s["key"] for s in got] == ["a", "b", "c"]
        for want, have in zip(raw, got):
            assert (have["txt"], have["task"], have.get("extra")) == (want["txt"], want["task"], want.get("extra"))
            a, ra = features.decode_audio(want["audio"], want.get("start"), want.get("end"))
            b, rb = features.decode_audio(have["audio"])
            assert ra == rb and a.shape == b.shape
            torch.testing.assert_close(a, b, atol=1 / 32768, rtol=0)
        assert got[1]["lang"] == "en"


def test_data_yaml_list_reads_as_shard_entries(tmp_path, corpus):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "shards_list.txt").write_text("".join(f"/d/t{i}.tar\n" for i in range(10)))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "combines_list.txt").write_text("/m/x.list\n/m/y.list\n")
    (tmp_path / "c" / "combines_tar_root.txt").write_text("/tars/\n")
    corpus.add("r1")
    raw = corpus.write()
    spec = tmp_path / "data.yaml"
    spec.write_text(f"a: {{path: {tmp_path}/s/shards_list.txt, weight: 2}}\n"
                    f"b: {{path: {tmp_path}/c/combines_list.txt}}\n"
                    f"c: {{path: {raw}}}\n")
    out = tmp_path / "train.list"
    assert yaml_to_list(str(spec), str(out), seed=1) == 20 + 2 + 1
    entries = read_entries(str(out), "shard")
    kinds = collections.Counter(e.kind for e in entries)
    assert kinds == {"shard": 20, "combine": 2, "raw": 1}
    combine = next(e for e in entries if e.kind == "combine")
    assert (combine.meta, combine.value) in {("/m/x.list", "/tars/x.tar"), ("/m/y.list", "/tars/y.tar")}
    raw_entry = next(e for e in entries if e.kind == "raw")
    (sample,) = list(read_entry(raw_entry, SkipCounter(max_workers=0)))
    assert sample["key"] == "r1" and os.path.exists(sample["audio"])


def test_convert_cli(corpus, tmp_path, capsys):
    from common_utils import convert

    corpus.add("a")
    corpus.add("b", task="<TEXT2TOKEN>", wav=False, extra={"speech_token": [1, 2, 3]})
    convert.main(["raw2shard", "--data", str(corpus.write()), "--out", str(tmp_path / "s")])
    summary = json.loads(capsys.readouterr().out)
    samples, skipped = samples_of(summary["list"], "shard")
    assert [s["key"] for s in samples] == ["a", "b"] and samples[1]["audio"] is None and not skipped


def test_undecodable_list_lines_are_skipped_not_fatal(corpus, tmp_path, wav_writer):
    corpus.add("a")
    corpus.add("b")
    raw = corpus.write()
    lines = raw.read_bytes().splitlines(keepends=True)
    raw.write_bytes(lines[0] + b'{"key": "bad", "txt": "\xff\xfe"}\n' + lines[1])
    samples, skipped = samples_of(raw, "raw")
    assert [s["key"] for s in samples] == ["a", "b"] and skipped == {"bad_json": 1}

    # combine metadata (read inside a worker) and the list of lists
    wav = wav_writer(tmp_path / "x.wav").read_bytes()
    (tmp_path / "tars").mkdir()
    _tar(tmp_path / "tars" / "part1.tar", [("a.wav", wav), ("b.wav", wav)])
    (tmp_path / "part1.list").write_bytes(b'{"key": "a", "txt": "A", "task": "<TRANSCRIBE>"}\n'
                                          b'{"key": "c", "txt": "\xc3\x28"}\n'
                                          b'{"key": "b", "txt": "B", "task": "<TRANSCRIBE>"}\n')
    (tmp_path / "combines_list.txt").write_bytes(b"part1.list\n\xff.list\n")
    (tmp_path / "combines_tar_root.txt").write_text("tars/\n")
    samples, skipped = samples_of(tmp_path / "combines_list.txt", "combine")
    assert sorted(s["key"] for s in samples) == ["a", "b"] and skipped == {"bad_json": 2}


def test_non_utf8_history_text_member_skips_the_sample(tmp_path, wav_writer):
    wav = wav_writer(tmp_path / "a.wav").read_bytes()
    members = [("k.txt", b"hi"), ("k.wav", wav), ("k.wav_1", wav), ("k.txt_1", b"\xff\xfe bad"),
               ("ok.txt", b"fine"), ("ok.wav", wav), ("ok.wav_1", wav), ("ok.txt_1", b"turn")]
    _tar(tmp_path / "s.tar", members)
    (tmp_path / "list").write_text("s.tar\n")
    samples, skipped = samples_of(tmp_path / "list", "shard")
    assert [s["key"] for s in samples] == ["ok"] and skipped == {"bad_history": 1}

    (tmp_path / "tars").mkdir()
    _tar(tmp_path / "tars" / "part1.tar", [(n, d) for n, d in members if not n.endswith(".txt")])
    (tmp_path / "part1.list").write_text('{"key": "k", "txt": "K"}\n{"key": "ok", "txt": "OK"}\n')
    (tmp_path / "combines_list.txt").write_text("part1.list\n")
    (tmp_path / "combines_tar_root.txt").write_text("tars/\n")
    samples, skipped = samples_of(tmp_path / "combines_list.txt", "combine")
    assert [s["key"] for s in samples] == ["ok"] and skipped == {"bad_history": 1}


def test_combine_metadata_bad_key_or_history_is_skipped(tmp_path, wav_writer):
    wav = wav_writer(tmp_path / "a.wav").read_bytes()
    (tmp_path / "tars").mkdir()
    _tar(tmp_path / "tars" / "part1.tar", [("a.wav", wav), ("h1.wav", wav), ("h1.wav_1", wav),
                                           ("h2.wav", wav), ("h2.wav_1", wav), ("ok.wav", wav), ("ok.wav_1", wav)])
    meta = [{"key": ["a"], "txt": "A"}, {"key": {"x": 1}, "txt": "A"},
            {"key": "h1", "txt": "H", "history": "not a list"},
            {"key": "h2", "txt": "H", "history": ["not a dict"]},
            {"key": "ok", "txt": "OK", "history": [{"txt": "turn one"}]}]
    (tmp_path / "part1.list").write_text("".join(json.dumps(m) + "\n" for m in meta))
    (tmp_path / "combines_list.txt").write_text("part1.list\n")
    (tmp_path / "combines_tar_root.txt").write_text("tars/\n")
    samples, skipped = samples_of(tmp_path / "combines_list.txt", "combine")
    assert [s["key"] for s in samples] == ["ok"] and samples[0]["history"][0]["txt"] == "turn one"
    assert skipped == {"no_key": 2, "no_metadata": 1, "bad_history": 2}
