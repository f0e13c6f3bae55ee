"""extract_speech_tokens on the tiny exported tokenizer: raw and shard lists come back in their
format with extra.speech_token equal to one-by-one tokenization; reruns resume; bad files are
skipped, counted and named; the output list goes through the pipeline and trains."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import soundfile

from common_utils.convert import raw_to_shard
from osum_echat.bin import extract_speech_tokens as X
from osum_echat.data.features import decode_audio, resample
from osum_echat.token2wav.frontend import Frontend
from osum_echat.token2wav.tiny_onnx import write_tiny_onnx

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_extract")
    write_tiny_onnx(out)
    return out


def glide(seconds, rate, seed):
    t = np.arange(int(seconds * rate)) / rate
    f0 = 180 + 120 * np.sin(2 * np.pi * (0.5 + 0.2 * seed) * t)
    wav = 0.4 * np.sin(2 * np.pi * np.cumsum(f0) / rate) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (wav + 0.01 * np.random.default_rng(seed).standard_normal(t.size)).astype(np.float32)


def write_list(root, n=6):
    """n TTS-style utterances (24/16 kHz, 0.6..1.6 s), a missing file, an undecodable file, a text-only
    line, a broken json line, and one over 30 s."""
    (root / "wav").mkdir(parents=True)
    lines = []
    for i in range(n):
        rate = 24000 if i % 2 else 16000
        soundfile.write(root / f"wav/u{i}.wav", glide(0.6 + 0.2 * i, rate, i), rate, subtype="PCM_16")
        extra = {"duration": 0.6 + 0.2 * i} if i % 3 else json.dumps({"duration": 1.0})  # dict or JSON string
        lines.append({"key": f"u{i}", "wav": f"wav/u{i}.wav", "txt": "the color is red", "task": "<TEXT2TOKEN>",
                      "extra": extra})
    lines.insert(2, {"key": "gone", "wav": "wav/gone.wav", "txt": "x", "task": "<TEXT2TOKEN>"})
    (root / "wav/bad.wav").write_bytes(b"RIFF not really")
    lines.insert(4, {"key": "bad", "wav": "wav/bad.wav", "txt": "x", "task": "<TEXT2TOKEN>"})
    lines[0]["history"] = [{"wav": "wav/u1.wav", "txt": "earlier"}]
    lines.append({"key": "t2t", "txt": "answer", "task": "<TEXT2TEXT>", "extra": {"question": "q"}})
    soundfile.write(root / "wav/long.wav", np.zeros(16000 * 31, dtype=np.float32), 16000)
    lines.append({"key": "long", "wav": "wav/long.wav", "txt": "x", "task": "<TEXT2TOKEN>"})
    text = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines) + "{broken\n"
    (root / "data.list").write_text(text, encoding="utf-8")
    return root / "data.list"


def expected_tokens(tiny_dir, path):
    """One utterance at a time through the front-end (batch of one, as upstream's tool)."""
    wav, rate = decode_audio(str(path))
    return Frontend(tiny_dir, threads=1).speech_tokens([resample(wav, rate, 16000)])[0].tolist()


def run(argv, capsys):
    X.main(argv)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def unwrap(extra):
    """extra as a dict (the lists hold it as a dict or as a JSON string of one)."""
    return json.loads(extra) if isinstance(extra, str) else extra


def read_out(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_raw_list_filled_bad_files_reported_and_resumed(tmp_path, tiny_dir, capsys):
    data = write_list(tmp_path / "in")
    out = tmp_path / "out"
    argv = ["--model_dir", str(tiny_dir), "--data_type", "raw", "--data", str(data), "--output", str(out),
            "--batch_size", "4", "--threads", "1"]
    summary = run(argv, capsys)
    assert summary["tokenized"] == 6 and summary["copied_without_audio"] == 1
    assert summary["skipped"] == {"missing_file": 1, "bad_audio": 1, "too_long": 1, "bad_json": 1}
    skipped = (out / "skipped.tsv").read_text().splitlines()[1:]
    assert {tuple(s.split("\t")[:3]) for s in skipped} == {
        ("missing_file", f"{data}:3", "gone"), ("bad_audio", f"{data}:5", "bad"),
        ("too_long", f"{data}:10", "long"), ("bad_json", f"{data}:11", "")}
    rows = read_out(out / "data.list")
    assert [r["key"] for r in rows] == ["u0", "u1", "u2", "u3", "u4", "u5", "t2t"]
    for i, row in enumerate(rows[:6]):
        extra = unwrap(row["extra"])
        assert isinstance(row["extra"], str) == (i % 3 == 0)  # a JSON-string extra stays a string
        tokens = extra["speech_token"]
        assert tokens == expected_tokens(tiny_dir, tmp_path / f"in/wav/u{i}.wav")  # batched == one by one
        assert len(tokens) == -(-int((0.6 + 0.2 * i) * 100) // 4) and len(set(tokens)) > 1
        assert extra["duration"] == pytest.approx(0.6 + 0.2 * i if i % 3 else 1.0)
        assert row["wav"] == str(tmp_path / f"in/wav/u{i}.wav") and row["txt"] == "the color is red"
    assert rows[0]["history"] == [{"wav": str(tmp_path / "in/wav/u1.wav"), "txt": "earlier"}]
    assert rows[6] == {"key": "t2t", "txt": "answer", "task": "<TEXT2TEXT>", "extra": {"question": "q"}}
    complete = (out / "data.list").read_bytes()

    # the data pipeline reads the output: every speech sample carries its codes (+ bos/eos)
    from osum_echat.bin import inspect_data
    inspect_data.main(["--config", "conf/tiny_ct_config.yaml", "--data_type", "raw", "--data",
                       str(out / "data.list"), "--override", "dataset_conf.filter_conf.min_length=1"])
    seen = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert seen[-1] == {"samples": 7, "skipped": {}}
    by_key = {x["key"]: x["num_speech_tokens"] for x in seen[:-1]}
    assert all(by_key[r["key"]] == len(unwrap(r["extra"])["speech_token"]) + 2 for r in rows[:6])

    # an interrupted run: two complete lines and a torn third; the rerun finishes it
    lines = complete.splitlines(keepends=True)
    (out / "data.list").write_bytes(b"".join(lines[:2]) + lines[2][:25])
    again = run(argv, capsys)
    assert again["already_done"] == 2 and again["tokenized"] == 4
    assert read_out(out / "data.list") == rows
    assert run(argv, capsys)["already_done"] == 7  # nothing left to do


def test_shard_list_written_back_as_tars_that_train(tmp_path, tiny_dir, capsys):
    data = write_list(tmp_path / "in")
    shard_list, _ = raw_to_shard(str(data), str(tmp_path / "shards"), per_shard=4)
    out = tmp_path / "out"
    argv = ["--model_dir", str(tiny_dir), "--data_type", "shard", "--data", str(shard_list),
            "--output", str(out), "--batch_size", "3", "--threads", "1"]
    summary = run(argv, capsys)
    assert summary["tokenized"] == 6 and summary["skipped"] == {"too_long": 1, "bad_audio": 1}
    names = (out / "shards_list.txt").read_text().split()
    assert names == sorted(p.name for p in (tmp_path / "shards").glob("*.tar"))
    assert all((out / f"{n}.finished").exists() for n in names)
    for name in names:
        with tarfile.open(tmp_path / "shards" / name) as src, tarfile.open(out / name) as dst:
            old = {m.name: src.extractfile(m).read() for m in src.getmembers()}
            new = {m.name: dst.extractfile(m).read() for m in dst.getmembers()}
        assert set(new) == {m for m in old if m.split(".")[0] not in ("long", "bad")}
        for member, value in new.items():
            key, suffix = member.rsplit(".", 1)
            if suffix != "extra" or key == "t2t":
                assert value == old[member], member
                continue
            extra, before = unwrap(json.loads(value)), unwrap(json.loads(old[member]))
            assert isinstance(json.loads(value), str) == isinstance(json.loads(old[member]), str)
            assert extra["speech_token"] == expected_tokens(tiny_dir, tmp_path / f"in/wav/{key}.wav")
            assert {k: v for k, v in extra.items() if k != "speech_token"} == before
    assert run(argv, capsys)["tars_already_done"] == len(names)

    # the output trains: the pipeline reads it and two optimizer steps run on it
    cmd = [sys.executable, "-m", "osum_echat.bin.train", "--config", "conf/tiny_ct_config.yaml",
           "--device", "cpu", "--data_type", "shard", "--train_data", str(out / "shards_list.txt"),
           "--model_dir", str(tmp_path / "exp"), "--max_steps", "2", "--num_workers", "0",
           "--override_config", "train_conf.cv_at_start=false",
           "--override_config", "dataset_conf.batch_conf.batch_size=2",
           "--override_config", "dataset_conf.filter_conf.min_length=1"]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "exp" / "final.pt").exists()
    assert "missing_field" not in proc.stderr and "bad_speech_token" not in proc.stderr


def test_a_batch_that_differs_from_one_by_one_turns_batching_off(tmp_path, tiny_dir):
    from osum_echat.token2wav.speech_tokenizer import SpeechTokenizer, features

    class PaddingSensitive(SpeechTokenizer):
        def run_features(self, feats):
            codes = super().run_features(feats)
            return [c + 1 for c in codes] if len(feats) > 1 else codes  # a model that ignores lengths

    tok = PaddingSensitive(tiny_dir / "speech_tokenizer_v1.onnx", threads=1)
    ex = X.Extractor(tok, X.Report(tmp_path / "s.tsv"), batch_size=4)
    items = []
    for i in range(5):
        soundfile.write(tmp_path / f"{i}.wav", glide(0.5 + 0.1 * i, 16000, i), 16000)
        items.append(X.Item(f"l:{i}", str(i), {}, str(tmp_path / f"{i}.wav")))
    ex.run(items)
    assert ex.batch_size == 1 and ex.tokenized == 5
    for it in items:
        wav = decode_audio(it.audio)[0]
        assert np.array_equal(it.codes, tok.run_features([features(wav)])[0])


def test_cli_errors_are_one_line(tmp_path, tiny_dir, capsys):
    data = write_list(tmp_path / "in")
    for args, message in ((["--model_dir", str(tmp_path)], "speech_tokenizer_v1.onnx: missing"),
                          (["--model_dir", str(tiny_dir), "--data", str(tmp_path / "no.list")], "no.list"),
                          (["--model_dir", str(tiny_dir), "--audio_field", "answer"], "--audio_field")):
        argv = ["--data_type", "raw", "--data", str(data), "--output", str(tmp_path / "o"), *args]
        with pytest.raises(SystemExit) as stop:
            X.main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_truncated_tar_keeps_the_samples_before_the_damage(tmp_path, tiny_dir, capsys):
    data = write_list(tmp_path / "in")
    shard_list, _ = raw_to_shard(str(data), str(tmp_path / "shards"), per_shard=20)
    tar = tmp_path / "shards" / "shards_000000000.tar"
    with tarfile.open(tar) as t:
        cut = next(m for m in t.getmembers() if m.name == "u3.wav").offset_data + 100
    tar.write_bytes(tar.read_bytes()[:cut])
    summary = run(["--model_dir", str(tiny_dir), "--data_type", "shard", "--data", str(shard_list),
                   "--output", str(tmp_path / "out"), "--threads", "1"], capsys)
    assert summary["skipped"] == {"bad_audio": 1, "corrupt_tar": 1} and summary["tokenized"] == 3
    with tarfile.open(tmp_path / "out" / tar.name) as t:
        assert sorted({m.name.split(".")[0] for m in t.getmembers()}) == ["u0", "u1", "u2"]
    assert str(tar) in (tmp_path / "out" / "skipped.tsv").read_text()


def test_audio_from_an_extra_field_and_malformed_extras(tmp_path, tiny_dir, capsys):
    (tmp_path / "wav").mkdir()
    soundfile.write(tmp_path / "wav/q.wav", glide(0.7, 16000, 1), 16000)
    soundfile.write(tmp_path / "wav/a.wav", glide(1.1, 16000, 2), 16000)
    rows = [{"key": "s2s", "wav": "wav/q.wav", "txt": "reply", "task": "<S2TCHAT> <TEXT2TOKEN>",
             "extra": {"a_wav_path": "wav/a.wav", "think_str": "..."}},
            {"key": "broken", "wav": "wav/q.wav", "txt": "x", "task": "<S2TCHAT> <TEXT2TOKEN>",
             "extra": "{not json"},
            {"key": "listy", "wav": "wav/q.wav", "txt": "x", "task": "<S2TCHAT> <TEXT2TOKEN>", "extra": [1, 2]}]
    data = tmp_path / "s2s.list"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = run(["--model_dir", str(tiny_dir), "--data_type", "raw", "--data", str(data), "--output",
                   str(tmp_path / "out"), "--audio_field", "extra.a_wav_path", "--threads", "1"], capsys)
    assert summary["tokenized"] == 1 and summary["skipped"] == {"bad_json": 2}
    (row,) = read_out(tmp_path / "out" / "s2s.list")
    assert row["extra"]["speech_token"] == expected_tokens(tiny_dir, tmp_path / "wav/a.wav")  # the answer's
    assert row["extra"]["think_str"] == "..." and row["wav"] == str(tmp_path / "wav/q.wav")
