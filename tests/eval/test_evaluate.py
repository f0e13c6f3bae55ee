"""bin.evaluate end to end on tiny random checkpoints: decode once, reply-audio checks, a judge on
loopback (tests/eval/fake_judge.py: scores, garbage, 500s, slow), cache, resume, rescore offline.

The tiny models' words are nonsense; the checks are about what is asked, cached, counted and reported."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from osum_echat.bin.evaluate import main

DECODE = ["--greedy", "--max_text_tokens", "4", "--max_speech_tokens", "6"]


def _args(echat_list, ckpts, out, url=None, *extra):
    config, a, b = ckpts
    args = ["--suite", "echat", "--data", echat_list, "--checkpoint", a, "--checkpoint", b, "--config", config,
            "--output", str(out), *DECODE, *extra]
    if url:
        args += ["--judge_base_url", url, "--judge_model", "judge-x", "--judge_backoff", "0.01"]
    return args


def _report(out):
    return json.loads((out / "report.json").read_text())


def test_two_checkpoints_judged_then_rescored_without_the_judge(tmp_path, echat_list, eval_checkpoints,
                                                                eval_token2wav, fake_judge, capsys):
    judge = fake_judge("scores")
    out = tmp_path / "run"
    assert main(_args(echat_list, eval_checkpoints, out, judge.url, "--token2wav_dir", eval_token2wav,
                      "--judge_concurrency", "2")) == 0
    report = _report(out)
    assert list(report["checkpoints"]) == ["a", "b"]
    asked = judge.requests()
    assert len(asked) == 6  # 3 items x 2 checkpoints x 1 rubric
    assert {(r["model"], r["temperature"], r["seed"]) for r in asked} == {("judge-x", 0.0, 1337)}
    assert report["judge"]["model"] == "judge-x" and report["judge"]["stats"]["calls"] == 6
    for label in ("a", "b"):
        c = report["checkpoints"][label]
        assert c["decoded"] == 3
        # the fake answers "Score: [[4]]" (echat's format) to everything
        assert c["metrics"]["judge"]["emotion"] == {"mean": 4.0, "ci95": [4.0, 4.0], "count": 2, "invalid": 0}
        assert c["metrics"]["judge"]["gender"]["count"] == 1
        # think tags: the two think items, one score per labelled slot
        assert c["metrics"]["think"]["think_emotion"]["count"] + c["metrics"]["think"]["think_emotion"]["invalid"] == 2
        objective = c["metrics"]["objective"]
        assert objective["reply_seconds"]["count"] == 3  # every reply rendered and measured
        assert objective["reply_emotion_named"]["count"] == 3
    for label in ("a", "b"):  # the reply audio went through the scorer's <TRANSCRIBE> and <EMOTION>
        heard = [json.loads(x) for x in (out / label / "scorer/reply_audio.jsonl").read_text().splitlines()]
        assert sorted(r["task"] for r in heard) == ["<EMOTION>"] * 3 + ["<TRANSCRIBE>"] * 3
    png = (out / "echat.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "| emotion | 4.000 [4.000, 4.000] (n=2, invalid 0) | 4.000" in md and "judge-x" in md
    # the judge goes away: a rescore asks nothing and reports the same
    judge.stop()
    capsys.readouterr()
    assert main(_args(echat_list, eval_checkpoints, out, judge.url, "--rescore")) == 0
    again = _report(out)
    assert again["checkpoints"] == report["checkpoints"]
    assert again["judge"]["stats"] == {"calls": 0, "cache_hits": 6, "retries": 0, "errors": {}}
    assert "decoding" not in capsys.readouterr().err


def test_garbage_answers_are_invalid_not_zero(tmp_path, echat_list, eval_checkpoints, fake_judge):
    judge = fake_judge("garbage")
    out = tmp_path / "garbage"
    assert main(_args(echat_list, eval_checkpoints, out, judge.url)) == 0
    m = _report(out)["checkpoints"]["a"]["metrics"]["judge"]
    assert m["emotion"] == {"mean": None, "ci95": None, "count": 0, "invalid": 2}
    assert m["gender"]["invalid"] == 1
    assert "n/a (n=0, invalid 2)" in (out / "report.md").read_text()


def test_500_then_success_is_retried(tmp_path, echat_list, eval_checkpoints, fake_judge):
    judge = fake_judge("fail_first", "2")
    out = tmp_path / "retry"
    assert main(_args(echat_list, eval_checkpoints, out, judge.url, "--judge_concurrency", "1")) == 0
    report = _report(out)
    assert len(judge.requests()) == 8  # 6 answers + the 2 refused attempts
    assert report["judge"]["stats"]["retries"] == 2 and report["judge"]["stats"]["calls"] == 6
    assert report["checkpoints"]["b"]["metrics"]["judge"]["emotion"]["invalid"] == 0


def test_a_refused_request_is_one_invalid_item_not_the_run(tmp_path, echat_list, eval_checkpoints, fake_judge):
    judge = fake_judge("refuse_first", "1")
    out = tmp_path / "refused"
    assert main(_args(echat_list, eval_checkpoints, out, judge.url, "--judge_concurrency", "1")) == 0
    report = _report(out)
    assert len(judge.requests()) == 6  # a 400 is not retried
    assert report["judge"]["stats"]["calls"] == 5 and report["judge"]["stats"]["errors"] == {"400": 1}
    m = [report["checkpoints"][x]["metrics"]["judge"] for x in ("a", "b")]
    assert sum(d[k]["invalid"] for d in m for k in d) == 1 and sum(d[k]["count"] for d in m for k in d) == 5
    assert len((out / "judge_cache.jsonl").read_text().splitlines()) == 5  # asked again next time


def test_unreachable_judge_is_one_line_and_keeps_the_decoding(tmp_path, echat_list, eval_checkpoints, dead_url,
                                                              capsys):
    out = tmp_path / "dead"
    with pytest.raises(SystemExit) as e:
        main(_args(echat_list, eval_checkpoints, out, dead_url, "--judge_retries", "1"))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: judge judge-x at " + dead_url) and "connection" in err and "--rescore" in err
    for label in ("a", "b"):
        assert len((out / label / "decode/reply.jsonl").read_text().splitlines()) == 3
    assert not (out / "report.json").exists()


def test_killed_run_resumes_without_asking_twice(tmp_path, echat_list, eval_checkpoints, fake_judge):
    slow = fake_judge("slow", "0.7")
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "osum_echat.bin.evaluate",
           *_args(echat_list, eval_checkpoints, out, slow.url, "--judge_concurrency", "1")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = out / "judge_cache.jsonl"
    deadline = time.time() + 120
    while not (cache.exists() and len(cache.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    cached = len(cache.read_text().splitlines())
    assert 2 <= cached < 6
    fast = fake_judge("scores")
    assert main(_args(echat_list, eval_checkpoints, out, fast.url)) == 0
    assert len(fast.requests()) == 6 - cached  # only what the killed run had not recorded
    keys = [json.loads(x)["key"] for x in cache.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 6
    stats = _report(out)["judge"]["stats"]
    assert stats["cache_hits"] == cached and stats["calls"] == 6 - cached


def test_published_suites_decode_from_their_own_files(tmp_path, eval_checkpoints, write_tone, fake_judge):
    """SD-Eval and EchoMind files as released (audio relative to their roots) go through the same
    decoding; EchoMind's multiple choice is decoded with its question as the user prompt and scored
    exactly (a reply naming no option is invalid); one --scorer_checkpoint hears every reply (its own train.yaml, else --config)."""
    config, a, b = eval_checkpoints
    audio = tmp_path / "audio"
    (audio / "RAVDESS").mkdir(parents=True)
    (tmp_path / "sd/data").mkdir(parents=True)
    rows = [{"wav_path": f"RAVDESS/{k}.wav", "transcript": "kids are talking by the door", "utt_id": k, "info": "sad",
             "dataset_name": "RAVDESS-Speech", "target": [{"reply": "oh no", "reply_emotion": "sadness"}]}
            for k in ("u1", "u2")]
    for i, r in enumerate(rows):
        write_tone(audio / r["wav_path"], 0.5, 300 + 50 * i)
    (tmp_path / "sd/data/test-emo.json").write_text(json.dumps(rows))
    out = tmp_path / "sd_out"
    assert main(["--suite", "sd_eval", "--data", str(tmp_path / "sd/data/test-emo.json"), "--audio_root", str(audio),
                 "--checkpoint", a, "--config", config, "--output", str(out), *DECODE]) == 0
    decoded = [json.loads(x) for x in (out / "a/decode/reply.jsonl").read_text().splitlines()]
    assert [r["key"] for r in decoded] == ["test-emo/u1", "test-emo/u2"]
    assert {r["task"] for r in decoded} == {"<S2TCHAT> <TEXT2TOKEN> <THINK>"}

    root = tmp_path / "echomind/data_synthesis"
    (root / "MCQ").mkdir(parents=True)
    (root / "audio/target").mkdir(parents=True)
    write_tone(root / "audio/target/q1.wav", 0.5, 400)
    (root / "MCQ/understanding.json").write_text(json.dumps([
        {"question_id": "q1", "audio_dir": "target", "audio_name": "q1.wav", "question": "What is the emotion?",
         "options_text": "A. happy\nB. sad\nC. angry\nD. calm", "answer": "B"},
        {"question_id": "q2", "audio_dir": "target", "audio_name": "missing.wav", "question": "Who speaks?",
         "options_text": "A. a man\nB. a woman\nC. a child\nD. nobody", "answer": "A"}]))
    (root / "script_info_synthesis.json").write_text(json.dumps([
        {"case_id": "id_854", "topic": "school", "spoken_info": "sad-toned expressive voice", "script": "I got it back.",
         "target_audio_info": {"target_input_audio_file": "target/q1.wav"}}]))
    judge = fake_judge("scores")
    out = tmp_path / "em_out"
    assert main(["--suite", "echomind", "--data", str(root), "--checkpoint", a, "--checkpoint", b, "--config", config,
                 "--scorer_checkpoint", a, "--output", str(out), *DECODE,
                 "--judge_base_url", judge.url, "--judge_model", "judge-x"]) == 0
    report = _report(out)
    assert report["scorer"] == a
    c = report["checkpoints"]["a"]
    assert c["decoded"] == 2 and c["not_decoded"] == 1 and c["failed"] == {"missing_file": 1}
    # the open reply: both EchoMind rubrics, C1-C4 and the vocal-empathy proxy, as the fake judge scored them
    assert {k: v["mean"] for k, v in c["metrics"]["judge"].items()} == {
        "target/context_fit": 4.0, "target/response_naturalness": 3.0, "target/colloquialism_degree": 5.0,
        "target/speech_information_relevance": 2.0, "target/vocal_empathy": 4.0}
    assert len(judge.requests()) == 4  # 2 rubrics x 2 checkpoints; the MCQ is not judged
    mcq = c["metrics"]["exact"]["mcq_understanding"]
    assert mcq["count"] + mcq["invalid"] == 1  # the tiny model's 4 ids name an option or they do not
    listed = {r["key"]: r for r in map(json.loads, (out / "a/decode/list.jsonl").read_text().splitlines())}
    mcq_row = listed["mcq_understanding/q1"]
    assert mcq_row["task"] == "<TRANSCRIBE> <S2TCHAT>" and "A. happy" in mcq_row["extra"]["question"]
    assert "not decoded 1 (missing_file 1)" in (out / "report.md").read_text()


def test_user_mistakes_are_one_line(tmp_path, echat_list, eval_checkpoints, repo_root, capsys):
    config, a, _ = eval_checkpoints
    typo = tmp_path / "typo.yaml"
    typo.write_text((repo_root / "conf/tiny_ct_config.yaml").read_text() + "\nlerning_rate: 0.1\n")
    not_weights = tmp_path / "notes.pt"
    not_weights.write_text("not a checkpoint")
    cases = [(["--config", str(typo), "--checkpoint", a], "lerning_rate"),
             (["--config", config, "--checkpoint", str(not_weights)], str(not_weights)),
             (["--config", config, "--checkpoint", str(tmp_path / "none.pt")], "not found"),
             (["--checkpoint", a], "train.yaml"),
             (["--config", config, "--checkpoint", a, "--judge_base_url", "http://127.0.0.1:9/v1"], "--judge_model")]
    for extra, expected in cases:
        with pytest.raises(SystemExit) as e:
            main(["--suite", "echat", "--data", echat_list, "--output", str(tmp_path / "out"), *DECODE, *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and err[-1].startswith("error: ") and expected in err[-1], (extra, err)
        assert "Traceback" not in "\n".join(err)
    with pytest.raises(SystemExit):
        main(["--suite", "sd_eval", "--data", str(tmp_path / "test-emo.json"), "--checkpoint", a, "--config", config,
              "--output", str(tmp_path / "out")])
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: sd_eval: file {tmp_path / 'test-emo.json'} not found"


def test_vstyle_judged_per_category(tmp_path, eval_checkpoints, write_tone, fake_judge, eval_token2wav):
    config, a, _ = eval_checkpoints
    (tmp_path / "wav").mkdir()
    rows = [{"instruct_id": i, "instruct_audio_path": write_tone(tmp_path / f"wav/v{i}.wav", 0.5, 300 + 40 * i),
             "instruct_text": "say good night in a whisper", "ability": ability}
            for i, ability in enumerate(("acoustic_attributes/volume", "acoustic_attributes/volume", "role_play/character"))]
    (tmp_path / "vstyle.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    judge = fake_judge("scores")
    out = tmp_path / "vs_out"
    assert main(["--suite", "vstyle", "--data", str(tmp_path / "vstyle.jsonl"), "--checkpoint", a, "--config", config,
                 "--token2wav_dir", eval_token2wav, "--output", str(out), *DECODE,
                 "--judge_base_url", judge.url, "--judge_model", "judge-x"]) == 0
    m = _report(out)["checkpoints"]["a"]["metrics"]
    assert {k: (v["mean"], v["count"]) for k, v in m["judge"].items()} == {
        "acoustic_attributes/volume": (3.0, 2), "role_play/character": (3.0, 1), "weighted overall": (3.0, 3),
        "weighted acoustic_attributes": (3.0, 2), "weighted role_play": (3.0, 1)}
    # the judge was told what the scorer heard in each reply wav (its transcript), not "no reply audio"
    heard = {json.loads(x)["key"]: json.loads(x)["text"] for x in (out / "a/scorer/reply_audio.jsonl").read_text().splitlines()}
    prompts = [r["user"] for r in judge.requests()]
    assert len(prompts) == 3 and not any("no reply audio" in p for p in prompts)
    for i in range(3):
        assert any(f"Reply audio transcript: {heard[f'{i}#asr']}" in p for p in prompts)
    assert m["objective"]["reply_seconds"]["count"] == 3
