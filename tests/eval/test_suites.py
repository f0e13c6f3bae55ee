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


def test_vstyle_metadata_folder(tmp_path):
    # the release's layout: <lang>/metadata.jsonl beside <lang>/wav/, fields as in VStyle's example metadata
    for lang in ("en", "zh"):
        (tmp_path / lang / "wav").mkdir(parents=True)
    en = [{"instruct_id": 1, "instruct_text": "In a child's voice, say: the playground is my favourite place.",
           "ability": "acoustic_attributes/age", "instruct_audio_path": "acoustic_properties-age-1.wav",
           "instruct_text_translation_zh": "..."},
          {"instruct_id": 667, "instruct_text": "I waited two hours and nobody called me back!",
           "ability": "empathy/anger", "instruct_audio_path": "/abs/empathy-anger-667.wav"}]
    zh = [{"instruct_id": 1, "instruct_text": "用孩子的声音说这句话。", "ability": "acoustic_attributes/age",
           "instruct_audio_path": "acoustic_properties-age-1.wav"}]
    for lang, rows in (("en", en), ("zh", zh)):
        (tmp_path / lang / "metadata.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    items = get_suite("vstyle").read(str(tmp_path), None)
    assert [(i.key, i.dimension, i.rubrics) for i in items] == [
        ("en/1", "acoustic_attributes/age", ("vstyle_acoustic_attributes",)),
        ("en/667", "empathy/anger", ("vstyle_empathy",)),
        ("zh/1", "acoustic_attributes/age", ("vstyle_acoustic_attributes",))]
    assert items[0].wav == str(tmp_path / "en/wav/acoustic_properties-age-1.wav") and items[1].wav == "/abs/empathy-anger-667.wav"
    assert items[0].fields["instruction_type"] == "acoustic_attributes/age"
    assert items[1].fields["input_instruction"].startswith("I waited") and items[2].fields["language"] == "zh"
    # --audio_root replaces wav/ beside the file
    again = get_suite("vstyle").read(str(tmp_path / "zh/metadata.jsonl"), str(tmp_path / "elsewhere"))
    assert again[0].wav == str(tmp_path / "elsewhere/acoustic_properties-age-1.wav")


@pytest.mark.parametrize("row,error", [
    ({"instruct_id": 3, "instruct_audio_path": "a.wav", "instruct_text": "x"}, r"bad.jsonl:1: no field 'ability'"),
    ({"instruct_id": 3, "instruct_audio_path": "a.wav", "ability": "instruction/style"}, r"no field 'instruct_text'"),
    ({"instruct_id": 3, "instruct_audio_path": "a.wav", "instruct_text": "x", "ability": "singing/pop"},
     r"'ability' is 'singing/pop'; its category must be one of acoustic_attributes"),
])
def test_vstyle_bad_line(tmp_path, row, error):
    (tmp_path / "bad.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(SuiteFormatError, match=error):
        get_suite("vstyle").read(str(tmp_path / "bad.jsonl"), None)


def test_vstyle_weighted_scores():
    # VStyle's weights (gemini_eval.py): composite_properties half of acoustic_attributes (0.125), each other
    # acoustic attribute 0.125 / 6, each empathy subcategory 0.25 / 4; abilities without a valid score drop out
    def m(mean, count, invalid=0):
        return {"mean": mean, "ci95": None, "count": count, "invalid": invalid}
    judged = {"acoustic_attributes/composite_properties": m(4.0, 2), "acoustic_attributes/age": m(2.0, 1),
              "empathy/anger": m(5.0, 1), "instruction/style": m(None, 0, 1)}
    out = get_suite("vstyle").derived_metrics({"judge": judged})["judge"]
    overall = (4 * 0.125 + 2 * 0.125 / 6 + 5 * 0.0625) / (0.125 + 0.125 / 6 + 0.0625)
    assert out["weighted overall"] == m(round(overall, 4), 4, 1)
    assert out["weighted acoustic_attributes"]["mean"] == round((4 * 0.125 + 2 * 0.125 / 6) / (0.125 + 0.125 / 6), 4)
    assert out["weighted empathy"] == m(5.0, 1) and "weighted instruction" not in out
    assert get_suite("vstyle").derived_metrics({"judge": {}}) == {}


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
