"""The task-table-driven tokenize stage on hand-made samples."""
import logging
import random

import pytest

from osum_echat import tasks
from osum_echat.data import processors as P
from osum_echat.data.skips import SkipCounter

N = 257  # speech_token_num: codes 0..255, 256 wraps the speech tokens
PROMPTS = {"<TRANSCRIBE>": ["transcribe it", "write it down", "what is said"], "<EMOTION>": ["which emotion"],
           "<MYTAG>": ["custom"]}


def run(tok, samples, seed=0, conf=None, think_mode="language", **kw):
    counter = SkipCounter(max_workers=0)
    out = list(P.tokenize(iter(samples), tok, counter, prompts=PROMPTS, speech_token_num=N,
                          rng=random.Random(seed), conf=conf, think_mode=think_mode, **kw))
    return out, counter.counts()


def decode(tok, ids):
    return tok.decode(ids)


def test_transcribe_is_lowercased_normalised_and_ends_with_eos(tiny_tokenizer):
    (s,), skipped = run(tiny_tokenizer, [{"key": "a", "txt": "Hello WORLD 你 好 < b >", "task": "<TRANSCRIBE>"}])
    assert not skipped
    assert s["label"][-1] == tiny_tokenizer.eos_token_id
    assert decode(tiny_tokenizer, s["label"][:-1]) == "hello world你好<b>"
    assert s["output_type"] == "text" and s["speech_token"] == []
    assert decode(tiny_tokenizer, s["prompt"]) in PROMPTS["<TRANSCRIBE>"]


def test_only_transcribe_is_lowercased(tiny_tokenizer):
    (s,), _ = run(tiny_tokenizer, [{"key": "a", "txt": "Hi <HAPPY>", "task": "<TRANSCRIBE> <EMOTION>"}])
    assert decode(tiny_tokenizer, s["label"][:-1]) == "Hi<HAPPY>"


def test_no_eos_after_the_no_loss_marker(tiny_tokenizer):
    (s,), _ = run(tiny_tokenizer, [{"key": "a", "txt": "abc<&&>", "task": "<TRANSCRIBE> <AGE>"}])
    assert s["label"][-1] != tiny_tokenizer.eos_token_id
    assert decode(tiny_tokenizer, s["label"]).endswith("<&&>")


def test_prompt_choice_is_seeded(tiny_tokenizer):
    samples = [{"key": str(i), "txt": "x", "task": "<TRANSCRIBE>"} for i in range(20)]
    first, _ = run(tiny_tokenizer, [dict(s) for s in samples], seed=3)
    again, _ = run(tiny_tokenizer, [dict(s) for s in samples], seed=3)
    other, _ = run(tiny_tokenizer, [dict(s) for s in samples], seed=4)
    assert [s["prompt"] for s in first] == [s["prompt"] for s in again]
    assert [s["prompt"] for s in first] != [s["prompt"] for s in other]
    assert len({tuple(s["prompt"]) for s in first}) > 1


def test_question_is_the_prompt_whatever_the_task(tiny_tokenizer):
    (s,), _ = run(tiny_tokenizer, [{"key": "a", "txt": "x", "task": "<TRANSCRIBE>", "extra": {"question": "why?"}}])
    assert decode(tiny_tokenizer, s["prompt"]) == "why?"


def test_language_think_wraps_think_str_and_cuts_the_leading_tag(tiny_tokenizer):
    sample = {"key": "a", "txt": "<开心>好的", "task": "<S2TCHAT> <TEXT2TOKEN> <THINK>",
              "extra": {"think_str": "想一想", "speech_token": list(range(30))}}
    (s,), _ = run(tiny_tokenizer, [sample])
    assert decode(tiny_tokenizer, s["label"][:-1]) == "<think>想一想<think end>好的"
    assert s["output_type"] == "speech2text_token_think"
    assert s["speech_token"] == [N - 1] + list(range(30)) + [N - 1]


def test_tag_think_builds_the_label_template(tiny_tokenizer):
    sample = {"key": "a", "txt": "好的", "task": "<S2TCHAT> <THINKER>",
              "extra": {"q_txt": "你好", "age": "ADULT", "gender": "<FEMALE>", "q_emotion": "HAPPY",
                        "caption": "<Speech>"}}
    (s,), _ = run(tiny_tokenizer, [sample], think_mode="tag")
    text = decode(tiny_tokenizer, s["label"][:-1])
    assert text.startswith("<think>用户说的话是:你好,年龄为:<ADULT>,性别为:<FEMALE>,情感为:<HAPPY>,")
    assert text.endswith("<think end><中立>好的")
    # without a question the tag template cannot be built
    _, skipped = run(tiny_tokenizer, [{"key": "b", "txt": "x", "task": "<S2TCHAT> <THINKER>", "extra": {}}],
                     think_mode="tag")
    assert skipped == {"missing_field": 1}


@pytest.mark.parametrize("sample,reason", [
    ({"task": "<TEXT2TOKEN>", "extra": {}}, "missing_field"),
    ({"task": "<S2TCHAT> <THINKER>", "extra": {}}, "missing_field"),
    ({"task": "<TEXT2TEXT>", "extra": {}}, "missing_field"),
    ({"task": "<TEXT2TEXT>", "extra": {"question": ""}}, "missing_field"),
    ({"task": "<TEXT2TOKEN>", "extra": {"speech_token": [1, 2, N - 1]}}, "bad_speech_token"),
    ({"task": "<TEXT2TOKEN>", "extra": {"speech_token": [1, "x", 3]}}, "bad_speech_token"),
    ({"task": "<TEXT2TOKEN>", "extra": {"speech_token": [1, -2, 3]}}, "bad_speech_token"),
    ({"task": "<TEXT2TOKEN>", "extra": {"speech_token": []}}, "bad_speech_token"),
    ({"task": "<TRANSCRIBE>", "txt": "I am ChatGPT"}, "other_assistant"),
])
def test_broken_samples_are_skipped_with_a_reason(tiny_tokenizer, sample, reason):
    good = {"key": "ok", "txt": "fine", "task": "<TRANSCRIBE>"}
    out, skipped = run(tiny_tokenizer, [dict(good), {"key": "bad", "txt": "x", **sample}, dict(good, key="ok2")])
    assert [s["key"] for s in out] == ["ok", "ok2"]
    assert skipped == {reason: 1}


@pytest.fixture
def data_log():
    """Records of the osum_echat.data logger (it does not propagate to pytest's caplog)."""
    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("osum_echat.data")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_unknown_tags_train_as_speech_to_text_with_one_warning_per_tag(tiny_tokenizer, data_log):
    samples = [{"key": f"d{i}", "txt": "Step Left", "task": "<DANCE>", "src": "my.list"} for i in range(3)]
    samples += [{"key": "s", "txt": "x", "task": "<SING>", "src": "my.list"},
                {"key": "m", "txt": "y", "task": "<MYTAG>"},  # unknown to the table, listed in the prompt file
                {"key": "t", "txt": "z", "task": "<TRANSCRIBE>"}]
    counter = SkipCounter(max_workers=0)
    out = list(P.tokenize(iter(samples), tiny_tokenizer, counter, prompts=PROMPTS, speech_token_num=N,
                          rng=random.Random(0)))
    assert [s["key"] for s in out] == ["d0", "d1", "d2", "s", "m", "t"]
    by_key = {s["key"]: s for s in out}
    for key in ("d0", "s", "m"):
        assert by_key[key]["output_type"] == "text" and by_key[key]["spec"].speech_input
        assert by_key[key]["speech_token"] == []
    assert by_key["d0"]["task"] == "<DANCE>" and by_key["d0"]["prompt"] == []
    assert decode(tiny_tokenizer, by_key["d0"]["label"][:-1]) == "Step Left"  # not lower-cased
    assert decode(tiny_tokenizer, by_key["m"]["prompt"]) == "custom"
    assert counter.counts() == {} and counter.total() == 0
    assert counter.notes() == {"unknown_task": 5}
    warned = [r.getMessage() for r in data_log]
    assert len(warned) == 3
    assert "'<DANCE>'" in warned[0] and "my.list" in warned[0] and "no user prompt" in warned[0]
    assert "'<SING>'" in warned[1] and "'<MYTAG>'" in warned[2]


def test_prompt_draws_follow_upstream_randint_sequence(tiny_tokenizer):
    """One randint(0, n-1) per sample that takes a prompt from the file, in data order; samples with
    extra.question, without prompts in the file, or skipped before the prompt draw nothing."""
    samples = [{"key": "0", "txt": "a", "task": "<TRANSCRIBE>"},
               {"key": "1", "txt": "b", "task": "<EMOTION>"},  # one prompt: still one draw
               {"key": "2", "txt": "c", "task": "<TRANSCRIBE>", "extra": {"question": "q?"}},
               {"key": "3", "txt": "d", "task": "<DANCE>"},  # unknown, not in the file
               {"key": "4", "txt": "I am ChatGPT", "task": "<TRANSCRIBE>"},  # skipped
               *[{"key": str(i), "txt": "e", "task": "<TRANSCRIBE>"} for i in range(5, 25)]]
    out, _ = run(tiny_tokenizer, [dict(s) for s in samples], seed=777)
    expect = random.Random(777)
    for s in out:
        if s["key"] in ("2", "3"):
            continue
        choices = PROMPTS[s["task"]]
        assert decode(tiny_tokenizer, s["prompt"]) == choices[expect.randint(0, len(choices) - 1)], s["key"]


def test_aliases_history_and_prompt_config_only_tags(tiny_tokenizer):
    toks = {"speech_token": list(range(40))}
    out, skipped = run(tiny_tokenizer, [
        {"key": "a", "txt": "x", "task": "<Speech2TEXTandTOKEN>", "extra": dict(toks)},
        {"key": "b", "txt": "x", "task": "TEXT2TOKEN", "extra": dict(toks)},
        {"key": "c", "txt": "x", "task": "<S2TCHAT> <TEXT2TOKEN>", "extra": dict(toks, speech_token_1=[1, 2]),
         "history": [{"audio": b"", "txt": "before"}]},
        {"key": "d", "txt": "x", "task": "<MYTAG>"},
    ])
    assert not skipped
    assert [s["output_type"] for s in out] == ["speech2text_token", "text2token", "speech2text_token_history",
                                               "text"]
    assert out[2]["history"][0]["speech_token"] == [N - 1, 1, 2, N - 1]
    assert decode(tiny_tokenizer, out[3]["prompt"]) == "custom"


def test_only_x_conversion_is_seeded_and_off_by_default(tiny_tokenizer):
    samples = [{"key": str(i), "txt": "你好<HAPPY>", "task": "<TRANSCRIBE> <EMOTION>"} for i in range(40)]
    off, _ = run(tiny_tokenizer, [dict(s) for s in samples])
    assert {s["task"] for s in off} == {"<TRANSCRIBE> <EMOTION>"}
    conf = {"use_50_per_change_if_only_X": True}
    on, _ = run(tiny_tokenizer, [dict(s) for s in samples], seed=1, conf=conf)
    again, _ = run(tiny_tokenizer, [dict(s) for s in samples], seed=1, conf=conf)
    converted = [s for s in on if s["task"] == "<EMOTION>"]
    assert 5 < len(converted) < 35
    assert [s["task"] for s in on] == [s["task"] for s in again]
    # upstream quirk: the kept "<HAPPY>" is a leading tag, cut in language-CoT mode -> only eos is left
    assert all(s["label"] == [tiny_tokenizer.eos_token_id] for s in converted)


def test_every_table_row_tokenizes(tiny_tokenizer):
    extra = {"speech_token": list(range(60)), "think_str": "t", "question": "q"}
    samples = [{"key": tag, "txt": "answer", "task": tag, "extra": dict(extra)} for tag in tasks.TASKS]
    out, skipped = run(tiny_tokenizer, samples)
    assert not skipped
    assert {s["output_type"] for s in out} == set(tasks.OUTPUT_TYPES)
    for s in out:
        assert (len(s["speech_token"]) > 0) == s["spec"].speech_output


def test_think_and_streaming_conversions_only_where_possible(tiny_tokenizer):
    toks = list(range(40))
    samples = [{"key": f"a{i}", "txt": "x", "task": "<S2TCHAT> <TEXT2TOKEN>",
                "extra": {"speech_token": toks, **({"think_str": "t"} if i % 2 else {})}} for i in range(40)]
    conf = {"use_think_mode": {"enable": True, "rate": 1.0}}
    out, skipped = run(tiny_tokenizer, [dict(s) for s in samples], conf=conf)
    assert not skipped
    assert {s["key"] for s in out if s["task"] == "<S2TCHAT> <TEXT2TOKEN> <THINK>"} == \
        {f"a{i}" for i in range(1, 40, 2)}
    conf = {"use_s2s_streaming_random": {"enable": True, "rate": 0.5}}
    out, _ = run(tiny_tokenizer, [dict(s) for s in samples], conf=conf, seed=5)
    streaming = [s for s in out if s["output_type"] == "speech2text_token_streaming"]
    assert 5 < len(streaming) < 35 and all(s["speech_token"][0] == N - 1 for s in streaming)
    tts = [{"key": str(i), "txt": "x", "task": "<TEXT2TOKEN>", "extra": {"speech_token": toks}} for i in range(20)]
    out, _ = run(tiny_tokenizer, tts, conf={"use_streaming_tts": {"enable": True, "rate": 1.0}})
    assert {s["output_type"] for s in out} == {"text2token_streaming"}


def test_streaming_sample_with_too_few_speech_tokens_is_skipped_not_a_crash(tiny_tokenizer):
    """The streaming layout needs 3 speech tokens per text token; the model would refuse less."""
    text = "one two three four"
    n_text = len(tiny_tokenizer.encode(text, add_special_tokens=False)) + 1  # + eos
    need = tasks.STREAM_MIN_SPEECH_PER_TEXT * n_text
    samples = [{"key": k, "txt": text, "task": "<TEXT2TOKEN> <STREAMING>",
                "extra": {"speech_token": list(range(n))}}
               for k, n in (("short", need - 3), ("enough", need))]  # wrapped adds 2 markers
    counter = SkipCounter()
    tokenized = list(P.tokenize(iter(samples), tiny_tokenizer, counter, prompts={}, speech_token_num=N,
                                rng=random.Random(0)))
    for s in tokenized:
        s["wav"], s["sample_rate"] = None, 16000
    kept = list(P.filter_samples(iter(tokenized), counter, max_seq_len=0, token_max_length=10**6))
    assert [s["key"] for s in kept] == ["enough"]
    assert counter.counts() == {"label_speech_ratio": 1}
