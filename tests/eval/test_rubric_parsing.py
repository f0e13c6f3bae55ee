"""Scores read from recorded judge answers in each rubric's published format; unreadable -> None."""
import pytest

from osum_echat.eval.rubric import RUBRIC_DIR, RubricError, load_rubric, parse_rubric
from osum_echat.eval.suites.echomind import read_letter

# answers written the way each benchmark's judge answers (SD-Eval: explanation then "Rating: [[N]]";
# EchoMind: JSON key-value pairs; VStyle: "Final score: [[N]]"; echat: "Score: [[N]]")
RECORDED = [
    ("sd_eval_test-emo", "The reply acknowledges the sadness but is generic.\n\nRating: [[6]]", {"rating": 6.0}),
    ("sd_eval_test-env", "Ignores the traffic noise entirely. Rating: [[ 2 ]]", {"rating": 2.0}),
    ("sd_eval_test-age", "Rating: [[11]]", {"rating": None}),  # out of 1-10: invalid, not clipped
    ("sd_eval_test-acc", "I would give it a seven.", {"rating": None}),
    ("echomind_response",
     '{\n"context_fit_score": 4,\n"context_fit_reason": "on topic",\n"response_naturalness_score": 5,\n'
     '"response_naturalness_reason": "natural",\n"colloquialism_degree_score": "3",\n'
     '"colloquialism_degree_reason": "mixed",\n"speech_information_relevance_score": 1,\n'
     '"speech_information_relevance_reason": "ignores the cue"\n}',
     {"context_fit": 4.0, "response_naturalness": 5.0, "colloquialism_degree": 3.0,
      "speech_information_relevance": 1.0}),
    ("echomind_response", '{"context_fit_score": 4, "response_naturalness_score": 0}',
     {"context_fit": 4.0, "response_naturalness": None, "colloquialism_degree": None,
      "speech_information_relevance": None}),
    ("echomind_vocal_empathy", '{"VES_score": 2, "explanation": "cheerful to a sad speaker"}', {"vocal_empathy": 2.0}),
    ("vstyle_acoustic_attributes", "Content right, the whisper was not followed.\nFinal score: [[2]]", {"score": 2.0}),
    # VStyle reads the last [[N]] of the answer (gemini_eval.py parse_score), "Final score:" or not
    ("vstyle_empathy", "Step 5: too brief, rate: [[3]]", {"score": 3.0}),
    ("vstyle_role_play", "style [[2]] at first, on reflection\nFinal score: [[4]]", {"score": 4.0}),
    ("vstyle_instruction", "Final score: [[6]]", {"score": None}),  # out of 1-5
    ("vstyle_instruction", "The style was followed.", {"score": None}),
    ("echat", "Comforts the sad speaker in a gentle tone. Score: [[5]]", {"fit": 5.0}),
    ("echat", "", {"fit": None}),
]


@pytest.mark.parametrize("name,answer,expected", RECORDED)
def test_recorded_answers(name, answer, expected):
    assert load_rubric(name).parse(answer) == expected


def test_every_rubric_file_loads_and_cites_a_source():
    names = sorted(p.stem for p in RUBRIC_DIR.glob("*.txt"))
    assert {"echat", "sd_eval_test-emo", "sd_eval_test-acc", "sd_eval_test-age", "sd_eval_test-env",
            "echomind_response", "echomind_vocal_empathy", "vstyle_acoustic_attributes",
            "vstyle_instruction", "vstyle_role_play", "vstyle_empathy"} <= set(names)
    for name in names:
        r = load_rubric(name)
        assert r.source and r.dimensions and r.user


def test_messages_fill_fields_and_name_a_missing_one():
    r = load_rubric("sd_eval_test-emo")
    msgs = r.messages({"statement": "kids are talking", "info": "Sad", "response": "oh no"})
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "kids are talking" in msgs[1]["content"] and "Sad" in msgs[1]["content"]
    with pytest.raises(RubricError, match="info"):
        r.messages({"statement": "x", "response": "y"})


def test_a_rubric_without_score_line_is_refused():
    with pytest.raises(RubricError, match="score"):
        parse_rubric("bad", "# rubric: x\n# range: 1 5\n[user]\nhello\n")


@pytest.mark.parametrize("reply,letter", [
    ("The answer is: [B]", "B"), ("the answer is C.", "C"), ("hello there<开始回答>(D) because", "D"),
    ("I am not sure", None), ("", None)])
def test_multiple_choice_letter(reply, letter):
    assert read_letter(reply) == letter
