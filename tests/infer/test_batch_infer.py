"""Batch inference end to end on a list mixing every task family plus broken items (built offline).

A random tiny model decodes greedily (its words are nonsense, but deterministic): the checks are
about what ends where, in which order, what a rerun changes, and what the report counts.
"""
import json
import os
import subprocess
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch

from osum_echat.config import load_config
from osum_echat.infer.batch import Part, decode_part, merge, run
from osum_echat.models import build_model
from osum_echat.train import checkpointing as ckpt_io

SCRIPT_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
DECODE = "--greedy --max_text_tokens 3 --max_speech_tokens 4"

GOOD = [  # (key, task, txt, extra, has audio)
    ("asr_en", "<TRANSCRIBE>", "hello world", {}, True),
    ("asr_zh", "<TRANSCRIBE>", "今天有3个人", {}, True),
    ("asr_gender", "<TRANSCRIBE> <GENDER>", "good morning<MALE>", {}, True),
    ("emotion", "<EMOTION>", "<HAPPY>", {}, True),
    ("chat", "<S2TCHAT>", "the helper is here", {}, True),  # a training-time banned word: decoded anyway
    ("chat_think", "<S2TCHAT> <THINKER>", "i hear you", {"think_str": "they sound sad"}, True),
    ("t2t", "<TEXT2TEXT>", "an answer", {"question": "how are you"}, False),
    ("tts", "<TEXT2TOKEN>", "good day", {}, False),
    ("s2s", "<S2TCHAT> <TEXT2TOKEN>", "fine thanks", {}, True),
    ("s2s_think", "<S2TCHAT> <TEXT2TOKEN> <THINK>", "i see", {}, True),
]
LIST = "exp/demo/data/lists/s1_asr.jsonl"  # where the README's example reads its list
FAILED = {"missing_wav": "missing_file", f"{LIST}:12": "bad_json", "too_long": "audio_too_long",
          "unknown": "unknown_task", f"{LIST}:15": "bad_json"}


def _sine(path, seconds, hz=300):
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.2 * np.sin(2 * np.pi * hz * t)).astype("float32"), 16000, subtype="PCM_16")


def make_checkpoint_dir(model_dir, repo_root, tokenizer):
    """A checkpoint folder as training leaves it: final.pt + the resolved train.yaml."""
    config = load_config(repo_root / "conf/tiny_ct_config.yaml")
    torch.manual_seed(0)
    model = build_model(config, tokenizer=tokenizer)
    os.makedirs(model_dir, exist_ok=True)
    ckpt_io.atomic_write_yaml(config, os.path.join(model_dir, "train.yaml"))
    ckpt_io.atomic_torch_save({k: v.float() for k, v in model.state_dict().items()},
                              os.path.join(model_dir, ckpt_io.FINAL))
    return model, config


@pytest.fixture(scope="module")
def work(tmp_path_factory, repo_root, tiny_tokenizer):
    """tmp/{exp/demo/stage1/{final.pt,train.yaml}, wav/*.wav, LIST}: the demo's layout; wav paths
    relative to tmp (the working directory)."""
    tmp = tmp_path_factory.mktemp("batch")
    model, config = make_checkpoint_dir(tmp / "exp/demo/stage1", repo_root, tiny_tokenizer)
    (tmp / "wav").mkdir()
    (tmp / LIST).parent.mkdir(parents=True)
    lines = []
    for i, (key, task, txt, extra, audio) in enumerate(GOOD):
        row = {"key": key, "task": task, "txt": txt, "extra": extra}
        if audio:
            _sine(tmp / "wav" / f"{key}.wav", 0.4 + 0.05 * i, 200 + 30 * i)
            row["wav"] = f"wav/{key}.wav"
        lines.append(json.dumps(row, ensure_ascii=False).encode())
    _sine(tmp / "wav" / "long.wav", 31)
    lines.insert(3, json.dumps({"key": "missing_wav", "wav": "wav/nope.wav", "txt": "x", "task": "<TRANSCRIBE>"}).encode())
    lines.append(b'{"key": "latin1", "txt": "caf\xe9", "task": "<TRANSCRIBE>"}')  # line 12: not UTF-8
    lines.append(json.dumps({"key": "too_long", "wav": "wav/long.wav", "txt": "x", "task": "<TRANSCRIBE>"}).encode())
    lines.append(json.dumps({"key": "unknown", "wav": "wav/asr_en.wav", "txt": "x", "task": "<FOO>"}).encode())
    lines.append(b'{"key": broken json')  # line 15
    (tmp / LIST).write_bytes(b"\n".join(lines) + b"\n")
    return {"dir": tmp, "model": model.eval(), "config": config, "tokenizer": tiny_tokenizer}


def read(path):
    return open(path, "rb").read()


def test_same_prompt_and_output_whatever_the_split(work, tmp_path):
    """nj 1 vs 3 under greedy decoding: identical results (prompts drawn by key and seed only)."""
    w = work
    one = run(w["model"], w["tokenizer"], w["config"], "raw", str(w["dir"] / LIST),
              str(tmp_path / "one/text"), root=str(w["dir"]), decoder=_decoder(w["model"]))
    for rank in range(3):
        decode_part(w["model"], w["tokenizer"], w["config"], "raw", str(w["dir"] / LIST),
                    str(tmp_path / "three/text"), decoder=_decoder(w["model"]), root=str(w["dir"]),
                    rank=rank, world_size=3)
    three = merge(str(tmp_path / "three/text"), 3)
    assert one == three
    for name in ("text", "text.jsonl", "text.failed"):
        assert read(tmp_path / "one" / name) == read(tmp_path / "three" / name)


def test_a_run_stopped_midway_resumes_without_duplicates(work, tmp_path):
    w = work
    out = str(tmp_path / "text")
    args = (w["model"], w["tokenizer"], w["config"], "raw", str(w["dir"] / LIST), out)
    full = run(*args, root=str(w["dir"]), decoder=_decoder(w["model"]))
    expected = read(out + ".jsonl")
    part = Part.of(out, 0, 1)
    lines = open(part.jsonl, "rb").read().splitlines(keepends=True)
    with open(part.jsonl, "wb") as f:  # as if killed while writing the 5th record
        f.write(b"".join(lines[:4]) + lines[4][:20])
    os.remove(out + ".jsonl")
    again = run(*args, root=str(w["dir"]), decoder=_decoder(w["model"]))
    assert again == full and read(out + ".jsonl") == expected


def test_shard_list_with_a_corrupt_tar(work, tmp_path):
    w = work
    for name, keys in (("good", ("sa", "sb")), ("bad", ("ba", "bb"))):
        with tarfile.open(tmp_path / f"{name}.tar", "w") as tar:
            for key in keys:
                tar.add(w["dir"] / "wav" / "asr_en.wav", arcname=f"{key}.wav")
                (tmp_path / f"{key}.txt").write_text("hello world")
                tar.add(tmp_path / f"{key}.txt", arcname=f"{key}.txt")
    data = (tmp_path / "bad.tar").read_bytes()
    (tmp_path / "bad.tar").write_bytes(data[:len(data) // 3])  # cut inside the first member: ba is lost
    good = tmp_path / "good.tar"
    (tmp_path / "shards.list").write_text(f"{good}\n{tmp_path / 'bad.tar'}\n")
    report = run(w["model"], w["tokenizer"], w["config"], "shard", str(tmp_path / "shards.list"),
                 str(tmp_path / "out/text"), decoder=_decoder(w["model"]))
    assert report["decoded"] == 2 and report["failed"] == {"corrupt_tar": 1}
    assert (tmp_path / "out/text.failed").read_text() == "ba\tcorrupt_tar\n"


def readme_commands(repo_root) -> list:
    """The first shell block of docs/inference.md's "Inference and scoring" (the README's table points there)."""
    readme = (repo_root / "docs" / "inference.md").read_text()
    section = readme[readme.index("## Inference and scoring"):]
    start = section.index("\n", section.index("```bash")) + 1  # after the info string (`bash runnable`)
    block = section[start:section.index("```", start)]
    return [c.split("  #")[0] for c in block.replace("\\\n", " ").splitlines() if c.strip()]


def test_readme_commands_decode_in_order_record_every_failure_and_resume(work, repo_root):
    """The README's commands as written, from a folder laid out like the demo (checkpoint folder as
    training writes it, the mixed list at the demo list's path): first run, then the rerun."""
    tmp = work["dir"]
    os.symlink(repo_root / "infer_with_shards_or_raw.sh", tmp / "infer_with_shards_or_raw.sh")
    commands = readme_commands(repo_root)
    assert len(commands) == 2

    r = _shell(commands[0], tmp)
    out = tmp / "exp/demo/infer/text"
    assert [line.split("\t")[0] for line in out.read_text().splitlines()] == [g[0] for g in GOOD]
    failed = dict(line.split("\t") for line in (tmp / "exp/demo/infer/text.failed").read_text().splitlines())
    assert failed == FAILED
    records = [json.loads(line) for line in open(f"{out}.jsonl")]
    assert [(r["key"], r["task"], r["reference"]) for r in records] == [(g[0], g[1], g[2]) for g in GOOD]
    assert all(set(r) >= {"text", "think", "speech_tokens", "output_type", "wav"} for r in records)
    report = json.loads(open(f"{out}.report.json").read())
    assert (report["listed"], report["decoded"]) == (15, 10)
    assert report["failed"] == {"bad_json": 2, "audio_too_long": 1, "missing_file": 1, "unknown_task": 1}
    m = report["metrics"]
    assert (m["transcription"]["wer"]["count"], m["transcription"]["cer"]["count"]) == (2, 1)
    assert {s: v["count"] for s, v in m["paralinguistic"].items()} == {"emotion": 1, "gender": 1}
    families = ("s2t_chat", "s2t_chat_think", "t2t_chat", "tts", "s2s", "s2s_think")
    assert {f: m[f]["count"] for f in families} == dict.fromkeys(families, 1)
    assert "listed 15  decoded 10  failed 5" in r.stdout and "decode: done, 15/15 utt (100%)" in r.stderr
    assert (f"5 failed: missing_wav (missing_file), {LIST}:12 (bad_json), too_long (audio_too_long), unknown "
            f"(unknown_task), {LIST}:15 (bad_json); the full list: exp/demo/infer/text.failed") in r.stdout
    # 3 text tokens cannot finish a random model's answer: every text row hits the cap, warned once
    hits = sum(r["hit_max_text_tokens"] for r in records)
    assert report["hit_max_text_tokens"] == hits >= 5 and f"hit max_text_tokens {hits}" in r.stdout
    assert report["hit_max_speech_tokens"] >= 1  # 4 speech tokens cannot close a speech span either
    assert r.stdout.count("warning:") == 2 and "max_text_tokens cap" in r.stdout and "max_speech_tokens cap" in r.stdout
    assert (tmp / "exp/demo/infer/text.split1/log.0").read_text().count("the output is cut") == 2  # once per cap
    assert f"{LIST}:4 key=missing_wav" in (tmp / "exp/demo/infer/text.split1/log.0").read_text()

    before = {p: read(f"{out}{p}") for p in ("", ".jsonl", ".failed", ".report.json")}
    r = _shell(commands[1], tmp)  # another split, upstream's option names: nothing left to decode
    assert {p: read(f"{out}{p}") for p in before} == before
    logs = "".join((tmp / f"exp/demo/infer/text.split2/log.{i}").read_text() for i in range(2))
    assert logs.count("decoded 0,") == 2


def _shell(command, cwd):
    command += f" --extra '{DECODE}'"
    r = subprocess.run(command, shell=True, cwd=cwd, env=SCRIPT_ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, command + "\n" + r.stdout + r.stderr
    return r


def _decoder(model):
    from osum_echat.generation.decode import Decoder

    return Decoder(model, overrides={"max_text_tokens": 3, "max_speech_tokens": 4}, greedy=True)


def test_decoding_keeps_samples_without_target_only_fields(tmp_path, tiny_tokenizer, repo_root):
    """Speech tokens and think_str are training targets: decoding must not need them (training does)."""
    from osum_echat.data.dataset import build_dataset, one_by_one_config

    t = np.arange(8000) / 16000
    sf.write(tmp_path / "q.wav", (0.2 * np.sin(2 * np.pi * 300 * t)).astype("float32"), 16000)
    rows = [{"key": "s2s", "wav": "q.wav", "txt": "fine thanks", "task": "<S2TCHAT> <TEXT2TOKEN>"},
            {"key": "think", "wav": "q.wav", "txt": "i hear you", "task": "<S2TCHAT> <TEXT2TOKEN> <THINK>"},
            {"key": "tts", "txt": "good morning", "task": "<TEXT2TOKEN>"},
            {"key": "t2t", "txt": "an answer", "task": "<TEXT2TEXT>"}]  # question is an input: still needed
    (tmp_path / "d.list").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = one_by_one_config(load_config(repo_root / "conf/tiny_ct_config.yaml"))

    def keys(mode):
        ds = build_dataset(cfg, "raw", str(tmp_path / "d.list"), tiny_tokenizer, root=str(tmp_path), mode=mode)
        return [b.keys[0] for b in ds], ds.skip_counts()

    assert keys("infer") == ([], {"missing_field": 4})
    kept, skipped = keys("decode")
    assert sorted(kept) == ["s2s", "think", "tts"] and skipped == {"missing_field": 1}


def test_speech_outputs_are_rendered_with_token2wav(work, tmp_path):
    """With a token2wav model: OUT_wavs/KEY.wav at its sample rate, listed in the jsonl, durations in the report."""
    from osum_echat.bin.token2wav import make_tiny
    from osum_echat.token2wav import Token2Wav

    w = work
    rows = [json.dumps({"key": k, "task": t, "txt": x, "extra": e, **({"wav": f"wav/{k}.wav"} if a else {})})
            for k, t, x, e, a in GOOD if k in ("asr_en", "tts", "s2s")]
    (w["dir"] / "speech.jsonl").write_text("\n".join(rows) + "\n")
    t2w = Token2Wav.from_dir(make_tiny(tmp_path / "t2w", onnx=False))
    out = str(tmp_path / "out/text")
    report = run(w["model"], w["tokenizer"], w["config"], "raw", str(w["dir"] / "speech.jsonl"), out,
                 root=str(w["dir"]), decoder=_decoder(w["model"]), token2wav=t2w)
    records = {r["key"]: r for r in map(json.loads, open(out + ".jsonl"))}
    assert records["asr_en"]["wav"] is None
    for key in ("tts", "s2s"):
        r = records[key]
        assert r["wav"] == f"{out}_wavs/{key}.wav" and r["speech_tokens"]
        info = sf.info(r["wav"])
        assert info.samplerate == t2w.sample_rate == 22050
        assert r["wav_seconds"] == pytest.approx(info.frames / info.samplerate, abs=1e-3) and r["wav_seconds"] > 0
    assert report["metrics"]["tts"]["wav_seconds"]["count"] == 1
    assert report["metrics"]["s2s"]["wav_seconds"]["mean"] == records["s2s"]["wav_seconds"]


def test_one_tar_is_shared_out_over_processes(work, tmp_path):
    """A shard list of one tar still splits: each of 2 processes decodes some of its utterances."""
    w = work
    with tarfile.open(tmp_path / "one.tar", "w") as tar:
        for i in range(4):
            tar.add(w["dir"] / "wav" / "asr_en.wav", arcname=f"u{i}.wav")
            (tmp_path / f"u{i}.txt").write_text("hello world")
            tar.add(tmp_path / f"u{i}.txt", arcname=f"u{i}.txt")
    (tmp_path / "shards.list").write_text(f"{tmp_path / 'one.tar'}\n")
    out = str(tmp_path / "out/text")
    counts = [decode_part(w["model"], w["tokenizer"], w["config"], "shard", str(tmp_path / "shards.list"), out,
                          decoder=_decoder(w["model"]), rank=r, world_size=2)["decoded"] for r in range(2)]
    assert counts == [2, 2]
    report = merge(out, 2)
    assert report["decoded"] == 4 and [line.split("\t")[0] for line in open(out)] == ["u0", "u1", "u2", "u3"]


def test_script_takes_decode_flags_directly(work, repo_root):
    """--greedy, --decode_batch_size, --dtype, --prompt_style and per-control overrides given to the
    batch script itself reach every process: same output as through --extra, at another batch size
    (greedy: batched = unbatched); a mistyped option is one clear line, not a hang or a silent no-op."""
    tmp = work["dir"]
    script = repo_root / "infer_with_shards_or_raw.sh"
    base = f"bash {script} --checkpoint exp/demo/stage1/final.pt --data {LIST}"

    def run(command):
        return subprocess.run(command, shell=True, cwd=tmp, env=SCRIPT_ENV, capture_output=True, text=True,
                              timeout=600)

    ref = run(f"{base} --output exp/flags/extra/text --extra '{DECODE} --prompt_style upstream_infer'")
    direct = run(f"{base} --output exp/flags/direct/text {DECODE} --prompt_style=upstream_infer "
                 f"--decode_batch_size 4 --dtype float32 --nj 2")
    assert ref.returncode == direct.returncode == 0, ref.stdout + ref.stderr + direct.stdout + direct.stderr
    out = {name: read(tmp / f"exp/flags/{name}/text") for name in ("extra", "direct")}
    assert out["direct"] == out["extra"] and out["direct"].count(b"\n") == len(GOOD)
    bad = run(f"{base} --output exp/flags/bad/text --greddy")
    assert "process 0 stopped: infer.py: error: unrecognized arguments: --greddy" in bad.stdout
