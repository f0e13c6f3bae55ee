"""Normaliser and metrics against hand-computed values."""
import pytest

from osum_echat.eval.metrics import SlotScore, error_rate, pick_class
from osum_echat.eval.normalize import is_cjk, normalize, tags_of


def test_normalize_case_punctuation_width_and_tags():
    assert normalize("ＨＥＬＬＯ，Ｗｏｒｌｄ！<HAPPY>") == "hello world"
    assert normalize("Don't stop -- \"now\".") == "don't stop now"
    assert normalize("你好，世界<NEUTRAL>") == "你 好 世 界"


def test_chinese_numbers_become_chinese_numerals():
    assert normalize("我有3个苹果，共12.5元") == "我 有 三 个 苹 果 共 十 二 点 五 元"
    assert normalize("3-4人") == "三 四 人"  # "-" between numbers is no minus sign
    assert normalize("it costs 12 dollars") == "it costs 12 dollars"  # only CJK text converts numbers


def test_cjk_detection_and_tags():
    assert is_cjk("I like 北京") and not is_cjk("plain words")
    assert tags_of("text<male><ADULT>") == ["<MALE>", "<ADULT>"]


def test_word_error_rate_counts_substitutions_deletions_insertions():
    r = error_rate(["the cat sat on the mat"], ["the cat sit on mat please"])
    assert (r.errors, r.ref_tokens, r.count) == (3, 6, 1)  # 3 edits turn one into the other
    assert r.rate == pytest.approx(0.5)
    r = error_rate(["a b c d", "e f"], ["a x c", "e f g"])
    # b->x (S), d deleted (D); g inserted (I) over 4 + 2 words
    assert (r.substitutions, r.deletions, r.insertions, r.ref_tokens, r.count) == (1, 1, 1, 6, 2)


def test_cjk_is_scored_by_characters_after_number_normalisation():
    r = error_rate(["今天天气很好", "我买了3个"], ["今天天汽很好啊", "我买了三个"])
    # 汽 for 气 (S) and 啊 inserted (I) over 6 + 5 characters; 3 == 三 after normalising
    assert (r.errors, r.ref_tokens) == (2, 11)


def test_empty_hypothesis_is_all_deletions_and_empty_reference_is_not_scored():
    r = error_rate(["a b c", "", "d"], ["", "x", "d"])
    assert (r.deletions, r.errors, r.ref_tokens, r.count) == (3, 3, 4, 2)
    assert error_rate([""], ["x"]).rate is None  # nothing to score: n/a, not 0


def test_slot_score_accuracy_recall_confusion():
    s = SlotScore()
    for ref, hyp in [("<MALE>", "<MALE>"), ("<FEMALE>", "<MALE>"), ("<FEMALE>", "<NONE>"), ("<MALE>", "<MALE>")]:
        s.add(ref, hyp)
    d = s.as_dict()
    assert d["accuracy"] == 0.5 and d["count"] == 4
    assert d["recall"] == {"<FEMALE>": 0.0, "<MALE>": 1.0}
    assert d["confusion"] == {"<FEMALE>": {"<MALE>": 1, "<NONE>": 1}, "<MALE>": {"<MALE>": 2}}
    assert SlotScore().as_dict()["accuracy"] is None


def test_pick_class_takes_the_first_known_unused_tag():
    used = set()
    assert pick_class(["<MALE>", "<ADULT>"], {"<ADULT>", "<CHILD>"}, used) == "<ADULT>"
    assert pick_class(["<MALE>", "<ADULT>"], {"<MALE>", "<FEMALE>"}, used) == "<MALE>"
    assert pick_class(["<HAPPY>"], {"<MALE>"}, set()) == "<NONE>"
