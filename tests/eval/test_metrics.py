import pytest

from osum_echat.eval.metrics import char_error_rate, normalize, tag_accuracy, word_error_rate


def test_normalize_drops_tags_and_punctuation_and_splits_chinese():
    assert normalize("Hello, World! <HAPPY>") == "hello world"
    assert normalize("你好，世界<NEUTRAL>") == "你 好 世 界"


def test_wer_counts_substitutions_deletions_insertions():
    r = word_error_rate(["the cat sat on the mat"], ["the cat sit on mat please"])
    # sat->sit (S), "the" deleted (D), "please" inserted (I) over 6 reference words
    assert (r.errors, r.total) == (3, 6)
    assert r.rate == pytest.approx(0.5)
    assert word_error_rate(["a b"], ["a b"]).rate == 0.0


def test_chinese_counts_characters():
    r = word_error_rate(["今天天气很好"], ["今天天汽很好"])
    assert (r.errors, r.total) == (1, 6)
    assert char_error_rate(["abc"], ["abd"]).errors == 1


def test_empty_references_are_ignored():
    assert word_error_rate(["", "a"], ["x", "a"]).total == 1


def test_tag_accuracy_uses_last_tag():
    refs = ["hello <HAPPY>", "hi <SAD>", "no tag here"]
    hyps = ["hello <happy>", "hi <ANGRY>", "whatever <X>"]
    assert tag_accuracy(refs, hyps) == pytest.approx(0.5)
