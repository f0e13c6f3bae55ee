"""Summary statistics: bootstrap CI seeded and sensible, invalid counted apart, think tags per slot."""
from osum_echat.eval.scoring import bootstrap_ci, score_items, summarize
from osum_echat.eval.suites import Item, Reply, get_suite


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [1, 2, 2, 3, 5, 4, 1, 2]
    ci = bootstrap_ci(values)
    assert ci == bootstrap_ci(values) and ci[0] < sum(values) / len(values) < ci[1]
    assert bootstrap_ci([3, 3, 3]) == [3.0, 3.0]
    assert bootstrap_ci([4]) is None and bootstrap_ci([]) is None


def test_invalid_is_counted_apart_from_the_mean():
    rows = [{"scores": {"judge": {"emotion": v}}} for v in (4.0, None, 2.0, None)]
    assert summarize(rows)["judge"]["emotion"] == {"mean": 3.0, "ci95": bootstrap_ci([4.0, 2.0]), "count": 2,
                                                   "invalid": 2}


def test_think_tags_objective_and_undecoded_items():
    suite = get_suite("echat")
    think = "<S2TCHAT> <TEXT2TOKEN> <THINK>"
    items = [Item("k1", None, think, labels={"emotion": "<SAD>", "gender": "<MALE>"}, dimension="emotion"),
             Item("k2", None, think, labels={"emotion": "<HAPPY>", "gender": "<MALE>"}, dimension="emotion"),
             Item("k3", None, think, labels={"emotion": "<SAD>"}, dimension="emotion")]
    replies = {"k1": Reply("i am sorry", think="<MALE><ADULT><SAD>", wav="r.wav", reply_asr="i am sorry",
                           reply_emotion=None),
               "k2": Reply("wow", think="")}  # an empty chain names no label: wrong, not skipped
    records = {"k1": {"speech_tokens": list(range(50)), "wav_seconds": 2.0}, "k2": {"speech_tokens": []}}
    rows = score_items(suite, items, replies, records, {})
    assert [r["decoded"] for r in rows] == [True, True, False]
    assert rows[0]["scores"]["think"] == {"think_emotion": 1.0, "think_gender": 1.0}
    assert rows[1]["scores"]["think"] == {"think_emotion": 0.0, "think_gender": 0.0}
    obj = rows[0]["scores"]["objective"]
    assert obj["reply_wer"] == 0.0 and obj["reply_seconds"] == 2.0 and obj["reply_emotion_named"] == 0.0
    assert obj["speech_seconds_per_char"] == 50 / 25 / len("i am sorry")
    assert rows[2]["scores"]["think"] == {}  # not decoded: counted in the report's not_decoded


def test_language_think_chains_are_read_by_their_words():
    suite = get_suite("echat")
    think = "<S2TCHAT> <TEXT2TOKEN> <THINK>"
    labels = [{"emotion": "<HAPPY>", "gender": "<MALE>", "age": "<ADULT>"},
              {"emotion": "<SAD>", "gender": "<FEMALE>", "age": "<CHILD>"}]
    items = [Item(f"k{i}", None, think, labels=lab, dimension="emotion") for i, lab in enumerate(labels)]
    replies = {"k0": Reply("great", think="the speaker is a man who sounds happy so i share the joy"),
               "k1": Reply("oh", think="the speaker is a woman who sounds happy")}
    rows = score_items(suite, items, replies, {}, {})
    assert rows[0]["scores"]["think"] == {"think_emotion": 1.0, "think_gender": 1.0, "think_age": 1.0}
    # a woman who sounds happy: gender right, emotion wrong, age (a child) wrong
    assert rows[1]["scores"]["think"] == {"think_emotion": 0.0, "think_gender": 1.0, "think_age": 0.0}
