"""The report per task family, against values computed by hand (see each comment)."""
import json

import pytest

from osum_echat.eval.report import build_report, format_report, main, plan_for


def rec(task, reference, text, **kw):
    rec.n += 1
    return {"key": f"k{rec.n}", "task": task, "reference": reference, "text": text, "think": kw.get("think", ""),
            "speech_tokens": kw.get("speech_tokens", []), "wav_seconds": kw.get("wav_seconds"),
            "hit_max_speech_tokens": kw.get("hit", False), "hit_max_text_tokens": False,
            "output_type": "?", "pos": [rec.n, 0]}


rec.n = 0

RECORDS = [
    rec("<TRANSCRIBE>", "the cat sat on the mat", "the cat sit on mat please"),  # 3 errors / 6 words
    rec("<TRANSCRIBE>", "hello world", "Hello, world!"),                         # 0 / 2
    rec("<TRANSCRIBE>", "今天天气很好", "今天天汽很好"),                           # CER 1 / 6
    rec("<TRANSCRIBE> <GENDER>", "good morning<MALE>", "good morning<MALE>"),    # 0 / 2, gender right
    rec("<TRANSCRIBE> <GENDER>", "good night<FEMALE>", "good night <MALE>"),     # 0 / 2, FEMALE -> MALE
    rec("<GENDER>", "<FEMALE>", ""),                                            # FEMALE -> NONE
    rec("<AGE> <GENDER>", "<ADULT><MALE>", "<MALE><ADULT>"),                    # both right, any order
    rec("<EMOTION>", "<HAPPY>", "<happy>"),                                     # right (case)
    rec("<TRANSCRIBE>", "", "anything"),                                        # no reference
    rec("<S2TCHAT>", "i am fine thanks", "i am fine"),                          # 9 chars
    rec("<S2TCHAT> <THINKER>", "ok", "ok", think="they sound sad"),
    rec("<S2TCHAT> <THINKER>", "sure", "sure"),                                 # no think
    rec("<TEXT2TOKEN>", "hello there", "", speech_tokens=[1] * 50, hit=True),   # 50/25 s over 11 chars
    rec("<S2TCHAT> <TEXT2TOKEN>", "x", "nice to meet you", speech_tokens=[2] * 100, wav_seconds=4.0),
]


@pytest.fixture(scope="module")
def report():
    return build_report(RECORDS, {"missing_file": 2, "too_long": 1})


def test_counts(report):
    assert (report["listed"], report["decoded"], report["failed"]) == (17, 14, {"missing_file": 2, "too_long": 1})
    assert report["hit_max_speech_tokens"] == 1 and report["hit_max_text_tokens"] == 0


def test_transcription_wer_and_cer_apart(report):
    t = report["metrics"]["transcription"]
    # transcripts of rows 1, 2, 4, 5: 3 errors over 6 + 2 + 2 + 2 words; tags are not words
    assert (t["wer"]["wer"], t["wer"]["count"], t["wer"]["ref_tokens"]) == (0.25, 4, 12)
    assert t["cer"]["cer"] == pytest.approx(1 / 6, abs=1e-4) and t["cer"]["count"] == 1
    assert t["no_reference"] == 1


def test_each_slot_on_its_own(report):
    p = report["metrics"]["paralinguistic"]
    assert set(p) == {"gender", "age", "emotion"}
    g = p["gender"]
    assert (g["accuracy"], g["count"]) == (0.5, 4)
    assert g["recall"] == {"<FEMALE>": 0.0, "<MALE>": 1.0}
    assert g["confusion"]["<FEMALE>"] == {"<MALE>": 1, "<NONE>": 1}
    assert (p["age"]["accuracy"], p["age"]["count"]) == (1.0, 1)
    assert (p["emotion"]["accuracy"], p["emotion"]["count"]) == (1.0, 1)


def test_generation_families_have_no_wer(report):
    m = report["metrics"]
    assert set(m) == {"transcription", "paralinguistic", "s2t_chat", "s2t_chat_think", "tts", "s2s"}
    assert m["s2t_chat"]["answer_chars"]["mean"] == 9 and "wer" not in m["s2t_chat"]
    assert m["s2t_chat_think"]["think_present"] == {"share": 0.5, "present": 1, "count": 2}
    tts = m["tts"]
    assert "answer_chars" not in tts  # TTS answers in speech only
    assert tts["empty_speech"] == 0 and m["s2s"]["speech_tokens"]["mean"] == 100
    assert tts["speech_seconds_per_text_char"]["mean"] == pytest.approx(50 / 25 / 11, abs=1e-4)
    assert tts["wav_seconds"] == {"mean": None, "min": None, "max": None, "count": 0}  # n/a, not 0
    s2s = m["s2s"]
    assert s2s["speech_seconds_per_text_char"]["mean"] == pytest.approx(100 / 25 / 16)
    assert s2s["wav_seconds"]["mean"] == 4.0


def test_family_comes_from_the_task_table():
    assert plan_for("<TRANSCRIBE> <EMOTION> <AGE> <GENDER>").slots == ("emotion", "age", "gender")
    assert plan_for("<S2TCHAT> <TEXT2TOKEN> <THINK>").family == "s2s_think"
    assert plan_for("<TEXT2TEXT>").family == "t2t_chat"


def test_nothing_scored_says_na():
    r = build_report([], {"bad_audio": 1})
    assert r["listed"] == 1 and r["metrics"] == {}
    text = format_report(build_report(RECORDS[:1], {}))
    assert "cer" in text and "n/a" in text


def test_cli_writes_json_and_table(tmp_path, capsys):
    out = tmp_path / "text"
    (tmp_path / "text.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    (tmp_path / "text.failed").write_text("a\tmissing_file\nb\ttoo_long\n")
    assert main([str(tmp_path / "text.jsonl")]) == 0
    report = json.loads((tmp_path / "text.report.json").read_text())
    assert report["listed"] == 16 and report["failed"] == {"missing_file": 1, "too_long": 1}
    assert "gender accuracy" in (tmp_path / "text.report.txt").read_text()
    assert "listed 16" in capsys.readouterr().out
    assert out.with_suffix(".report.txt").exists()
