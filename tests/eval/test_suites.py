"""Each suite reads small files written here in its published layout; mistakes are one clear line."""
import io
import json
import tarfile

import pytest

from osum_echat.eval.suites import SPOKEN_REPLY_TASK, SuiteFormatError, get_suite
from osum_echat.eval.suites.echomind import MCQ_TASK


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def test_sd_eval_subset_files(tmp_path):
    row = {"wav_path": "RAVDESS/Actor_01/a.wav", "transcript": "Kids are talking by the door", "utt_id": "u1",
           "target": [{"reply": "Are they too loud?", "reply_emotion": "sadness"}], "info": "sad",
           "dataset_name": "RAVDESS-Speech"}
    _write(tmp_path / "data/test-emo.json", [row, {**row, "utt_id": "u2", "info": "happy"}])
    _write(tmp_path / "data/test-env.json", [{**row, "utt_id": "e1", "info": "rain"}])
    items = get_suite("sd_eval").read(str(tmp_path / "data"), str(tmp_path / "audio"))
    assert [i.key for i in items] == ["test-emo/u1", "test-emo/u2", "test-env/e1"]
    emo = items[0]
    assert emo.wav == str(tmp_path / "audio/RAVDESS/Actor_01/a.wav")
    assert emo.rubrics == ("sd_eval_test-emo",) and items[2].rubrics == ("sd_eval_test-env",)
    assert emo.statement == "Kids are talking by the door" and emo.fields["info"] == "Sad"
    assert emo.task == SPOKEN_REPLY_TASK and emo.dimension == "test-emo"
    # one file alone, audio relative to its folder by default
    one = get_suite("sd_eval").read(str(tmp_path / "data/test-env.json"), None)
    assert one[0].wav == str(tmp_path / "data/RAVDESS/Actor_01/a.wav")


def test_sd_eval_mistakes(tmp_path):
    with pytest.raises(SuiteFormatError, match="not found"):
        get_suite("sd_eval").read(str(tmp_path / "test-emo.json"), None)
    _write(tmp_path / "test-emo.json", [{"wav_path": "a.wav", "utt_id": "u1", "info": "sad"}])
    with pytest.raises(SuiteFormatError, match=r"item 0: no field 'transcript'"):
        get_suite("sd_eval").read(str(tmp_path / "test-emo.json"), None)
    _write(tmp_path / "mine.json", [])
    with pytest.raises(SuiteFormatError, match="subsets"):
        get_suite("sd_eval").read(str(tmp_path / "mine.json"), None)


def test_echomind_script_and_mcq_layout(tmp_path):
    root = tmp_path / "dataset/data_synthesis"
    cases = [{"case_id": "id_854", "topic": "school", "spoken_info": "sad-toned expressive voice",
              "script": "I got my exam results back.",
              **{f"{v}_audio_info": {f"{v}_input_audio_file": f"{v}/id_854_{v}.wav"}
                 for v in ("target", "neutral", "alternative")}},
             {"case_id": "id_104", "topic": "health", "spoken_info": "female", "script": "Can I book a visit?",
              **{f"{v}_audio_info": {f"{v}_input_audio_file": f"{v}/id_104_{v}.wav"}
                 for v in ("target", "neutral", "alternative")}}]
    _write(root / "script_info_synthesis.json", cases)
    _write(root / "MCQ/understanding.json", [{"question_id": "q1", "audio_dir": "target", "audio_name": "x.wav",
                                               "question": "What is the speaker's emotion?",
                                               "options_text": "A. happy\nB. sad\nC. angry\nD. calm", "answer": "B"}])
    items = get_suite("echomind").read(str(root), None)
    keys = [i.key for i in items]
    # neutral voice skipped for a speaker cue (female), as EchoMind's eval_response_main.py does
    assert keys == ["id_854_target", "id_854_neutral", "id_854_alternative", "id_104_target",
                    "id_104_alternative", "mcq_understanding/q1"]
    script = items[0]
    assert script.wav == str(root / "audio/target/id_854_target.wav")
    assert script.rubrics == ("echomind_response", "echomind_vocal_empathy")
    assert script.fields["spoken_info"] == "sad-toned expressive voice" and script.statement.startswith("I got")
    mcq = items[-1]
    assert mcq.task == MCQ_TASK and mcq.answer == "B" and "A. happy" in mcq.prompt
    assert mcq.wav == str(root / "audio/target/x.wav") and mcq.rubrics == ()
    from osum_echat.eval.suites import Reply
    suite = get_suite("echomind")
    assert suite.exact_scores(mcq, Reply("The answer is: B")) == {"mcq_understanding": 1.0}
    assert suite.exact_scores(mcq, Reply("The answer is: A")) == {"mcq_understanding": 0.0}
    assert suite.exact_scores(mcq, Reply("no idea")) == {"mcq_understanding": None}  # invalid, not wrong


def test_echomind_missing_script_field(tmp_path):
    _write(tmp_path / "script_info_human.json", [{"case_id": "c", "spoken_info": "male"}])
    with pytest.raises(SuiteFormatError, match="script"):
        get_suite("echomind").read(str(tmp_path / "script_info_human.json"), None)


def test_vstyle_jsonl(tmp_path):
    rows = [{"key": "v1", "wav": "wav/v1.wav", "instruction": "Say good night in a whisper.",
             "category": "acoustic_attributes", "language": "en"},
            {"id": "v2", "audio": "/abs/v2.wav", "text": "Comfort me, I lost my keys.", "task": "implicit_empathy"}]
    (tmp_path / "vstyle.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = get_suite("vstyle").read(str(tmp_path / "vstyle.jsonl"), None)
    assert [(i.key, i.dimension) for i in items] == [("v1", "acoustic_attributes"), ("v2", "implicit_empathy")]
    assert items[0].wav == str(tmp_path / "wav/v1.wav") and items[1].wav == "/abs/v2.wav"
    assert items[0].rubrics == ("vstyle",) and items[1].fields["instruction"].startswith("Comfort")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"key": "v3", "wav": "a.wav"}) + "\n")
    with pytest.raises(SuiteFormatError, match=r"bad.jsonl:1: no field 'category'"):
        get_suite("vstyle").read(str(tmp_path / "bad.jsonl"), None)


def _echat_rows(wav):
    return [{"key": "e1", "wav": wav, "txt": "i am sorry to hear that", "task": "<S2TCHAT> <TEXT2TOKEN> <THINK>",
             "extra": {"question": "i failed my test", "emotion": "<SAD>", "gender": "<MALE>", "age": "<ADULT>",
                       "dimension": "emotion"}},
            {"key": "e2", "wav": wav, "txt": "wow", "extra": {"question": "listen", "caption": "dog_bark"}}]


def test_echat_raw_and_shard(tmp_path):
    wav = tmp_path / "q.wav"
    wav.write_bytes(b"RIFF")
    rows = _echat_rows(str(wav))
    (tmp_path / "raw.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    suite = get_suite("echat")
    items = suite.read(str(tmp_path / "raw.jsonl"), None)
    assert [i.dimension for i in items] == ["emotion", "event"]
    assert items[0].labels == {"emotion": "<SAD>", "age": "<ADULT>", "gender": "<MALE>"}
    assert items[1].labels == {"event": "<DOG_BARK>"} and items[1].task == SPOKEN_REPLY_TASK
    assert items[0].statement == "i failed my test" and items[0].wav == str(wav)
    assert suite.decode_list(str(tmp_path / "raw.jsonl")) == ("raw", str(tmp_path / "raw.jsonl"))
    # the same samples as a WeNet shard
    tar = tmp_path / "shard.tar"
    with tarfile.open(tar, "w") as t:
        for r in rows:
            for name, data in ((f"{r['key']}.wav", b"RIFF"), (f"{r['key']}.txt", r["txt"].encode()),
                               (f"{r['key']}.extra", json.dumps(r["extra"]).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    (tmp_path / "shards.list").write_text(f"{tar}\n")
    shard_items = suite.read(str(tmp_path / "shards.list"), None)
    assert [(i.key, i.dimension, i.labels) for i in shard_items] == [(i.key, i.dimension, i.labels) for i in items]
    assert shard_items[0].wav is None  # the audio is inside the tar; decoding reads the list as it is
    assert suite.decode_list(str(tmp_path / "shards.list"))[0] == "shard"


def test_echat_mistakes(tmp_path):
    with pytest.raises(SuiteFormatError, match="not found"):
        get_suite("echat").read(str(tmp_path / "none.jsonl"), None)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"key": "k", "extra": {"dimension": "mood"}}) + "\n")
    with pytest.raises(SuiteFormatError, match="dimension 'mood'"):
        get_suite("echat").read(str(tmp_path / "bad.jsonl"), None)
    with pytest.raises(SuiteFormatError, match="unknown suite"):
        get_suite("nope")
