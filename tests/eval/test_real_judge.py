"""The judge client against a real OpenAI-compatible endpoint: `python -m osum_echat.bin.serve` (T2T on
a tiny random checkpoint) as a subprocess on loopback. Its answers are not scores: the run exercises
the transport (SDK, key, model name, temperature 0), the cache and the `invalid` count."""
import importlib.util
import json

import openai
import pytest

from osum_echat.bin.evaluate import main
from osum_echat.eval.judge import Judge, JudgeConfig

KEY = "judge-key-456"
DECODE = ["--greedy", "--max_text_tokens", "4", "--max_speech_tokens", "6"]


def _server_proc(repo_root):
    spec = importlib.util.spec_from_file_location("server_proc", repo_root / "tests/serve/server_proc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bin_serve_as_the_judge(tmp_path, repo_root, eval_checkpoints, echat_list, monkeypatch, capsys):
    config, a, b = eval_checkpoints
    sp = _server_proc(repo_root)
    base_url, proc = sp.start_server(["--checkpoint", a, "--config", config, "--api_key", KEY,
                                      "--model_name", "tiny-judge"])
    monkeypatch.setenv("TINY_JUDGE_KEY", KEY)
    out = tmp_path / "served"
    args = ["--suite", "echat", "--data", echat_list, "--checkpoint", a, "--checkpoint", b, "--config", config,
            "--output", str(out), *DECODE, "--judge_base_url", base_url + "/v1", "--judge_model", "tiny-judge",
            "--judge_api_key_env", "TINY_JUDGE_KEY", "--judge_max_tokens", "8"]
    try:
        assert main(args) == 0
        report = json.loads((out / "report.json").read_text())
        assert report["judge"]["stats"]["calls"] == 6 and report["judge"]["model"] == "tiny-judge"
        # the cache holds what the server answers: asked again by hand, the same text comes back
        cached = [json.loads(x) for x in (out / "judge_cache.jsonl").read_text().splitlines()]
        assert len(cached) == 6 and {c["model"] for c in cached} == {"tiny-judge"}
        client = openai.OpenAI(base_url=base_url + "/v1", api_key=KEY)
        messages = [{"role": "user", "content": "Rate this reply. Score: [[?]]"}]
        direct = client.chat.completions.create(model="tiny-judge", messages=messages, temperature=0, seed=1337,
                                                max_tokens=8).choices[0].message.content
        judge = Judge(JudgeConfig(base_url=base_url + "/v1", model="tiny-judge", api_key_env="TINY_JUDGE_KEY",
                                  max_tokens=8), str(tmp_path / "one.jsonl"), quiet=True)
        assert judge.ask_all([("r", "item", messages)]) == {"r": direct}
        # a wrong key is not retried into a score: the endpoint's 401 stops the run with one line
        monkeypatch.setenv("TINY_JUDGE_KEY", "wrong")
        with pytest.raises(SystemExit):
            main(args[:] + ["--output", str(tmp_path / "wrong_key")])
        assert "401" in capsys.readouterr().err
    finally:
        sp.stop_server(proc)
    for label in ("a", "b"):  # the tiny T2T answers hold no "Score: [[N]]": every item counted invalid
        m = report["checkpoints"][label]["metrics"]["judge"]
        assert sum(v["invalid"] for v in m.values()) == 3 and all(v["count"] == 0 for v in m.values())
    # the server is gone: the cached rescore gives the same report
    monkeypatch.setenv("TINY_JUDGE_KEY", KEY)
    assert main(args + ["--rescore"]) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["checkpoints"] == report["checkpoints"] and again["judge"]["stats"]["calls"] == 0
