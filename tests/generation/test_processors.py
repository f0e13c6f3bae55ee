"""Each logits processor on hand-built scores; expected results are worked out by hand or with numpy."""
import math

import numpy as np
import pytest
import torch

from osum_echat.generation.processors import (RepetitionPenalty, Rows, SpeechRepeatBlocking, TagCotConstraint,
                                              Temperature, TopK, TopP, build_chain, pick)
from osum_echat.generation.streaming import PhaseState
from osum_echat.tasks import DecodeConfig

INF = float("inf")


def rows(history, vocab=None, state=None):
    seen = None
    if vocab is not None:
        seen = torch.zeros(len(history), vocab, dtype=torch.bool)
        for i, h in enumerate(history):
            seen[i, h] = True
    return Rows(history, seen, state or [{} for _ in history])


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_scores():
    scores = torch.tensor([[2.0, -1.0, 0.5, 3.0, -4.0]])
    out = RepetitionPenalty(2.0)(scores.clone(), rows([[0, 1, 0]], vocab=5))
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0, -4.0]]
    out = RepetitionPenalty(2.0, exclude=[4])(scores.clone(), rows([[3, 4]], vocab=5))
    assert out.tolist() == [[2.0, -1.0, 0.5, 1.5, -4.0]]  # the excluded marker keeps its score


def test_tag_cot_constraint_allows_only_the_labels_once_after_the_prefix():
    scores = torch.arange(10, dtype=torch.float).repeat(2, 1)
    proc = TagCotConstraint(prefix=[7, 8], allowed=[2, 5])
    view = rows([[1, 7, 8], [7, 8, 1]])
    out = proc(scores.clone(), view)
    assert out[0].tolist() == [-INF, -INF, 2.0, -INF, -INF, 5.0, -INF, -INF, -INF, -INF]
    assert out[1].tolist() == scores[1].tolist()  # prefix not at the end: untouched
    again = proc(scores.clone(), view)  # once per row: the second match is left alone
    assert again[0].tolist() == scores[0].tolist()


def test_speech_repeat_blocking_runs_windows_and_per_code_limits():
    block = SpeechRepeatBlocking((5, 8, 5), {1446: (10, 13, 10)}, exclude=[4096])
    assert block.banned([3, 7, 7, 7, 7, 7]) == {7}  # five in a row
    assert block.banned([7, 7, 7, 7]) == set()
    assert block.banned([1, 2, 3, 2, 4, 2, 2, 5, 2]) == {2}  # five of the last eight
    assert block.banned([2, 1, 2, 3, 2, 4, 2, 5, 2]) == set()  # five in all, four in the last eight
    assert block.banned([1446] * 9) == set() and block.banned([1446] * 10) == {1446}
    assert block.banned([4096] * 6) == set()  # the span marker is never banned
    scores = torch.zeros(2, 4097)
    out = block(scores, rows([[5] * 5, [6]]))
    assert out[0, 5] == -INF and torch.isfinite(out[0, :5]).all() and torch.isfinite(out[1]).all()


def test_temperature_top_k_top_p_match_their_definitions():
    scores = torch.tensor([[1.0, 3.0, 2.0, 0.0, 2.5]])
    assert torch.allclose(Temperature(0.5)(scores, None), scores * 2)
    out = TopK(2)(scores.clone(), None)
    assert out.tolist() == [[-INF, 3.0, -INF, -INF, 2.5]]
    # top-p by hand: keep the most probable ids until their mass reaches p
    p = np.exp([1.0, 3.0, 2.0, 0.0, 2.5])
    p = p / p.sum()
    order = np.argsort(-p)
    cum = np.cumsum(p[order])
    for top_p in (0.3, 0.5, 0.8, 0.95):
        n_keep = int(np.searchsorted(cum, top_p) + 1)
        keep = set(order[:n_keep].tolist())
        out = TopP(top_p)(scores.clone(), None)[0]
        assert {i for i in range(5) if math.isfinite(out[i])} == keep, top_p


def test_top_p_after_top_k_on_a_large_vocabulary_keeps_the_top_p_set_by_hand():
    """After TopK the survivors alone are sorted (the fast path): the kept ids are still the smallest
    set of top ids whose probability reaches p, computed here independently."""
    g = torch.Generator().manual_seed(3)
    for top_k, top_p in ((10, 0.9), (15, 0.8), (5, 0.5)):
        scores = TopK(top_k)(torch.randn(3, 151936, generator=g) * 3, None)
        out = TopP(top_p)(scores.clone(), None)
        for row, got in zip(scores, out):
            ids = [int(i) for i in torch.nonzero(torch.isfinite(row)).flatten()]
            p = np.exp(row[ids].double().numpy() - row[ids].max().item())
            p = p / p.sum()
            order = np.argsort(-p)
            n_keep = int(np.searchsorted(np.cumsum(p[order]), top_p) + 1)
            assert {ids[j] for j in order[:n_keep]} == {int(i) for i in torch.nonzero(torch.isfinite(got)).flatten()}
            kept = torch.isfinite(got)
            assert torch.equal(got[kept], row[kept])  # kept scores are untouched


def test_chain_order_and_greedy_drops_the_warpers():
    conf = DecodeConfig(do_sample=True, temperature=1.2, top_k=10, top_p=0.9, repetition_penalty=1.05,
                        tag_cot_constraint=True, speech_repeat_blocking=True, speech_repetition_penalty=1.1)
    tag = TagCotConstraint([1], [2])
    names = [type(p).__name__ for p in build_chain(conf, "text", marker=4096, tag_cot=tag)]
    assert names == ["RepetitionPenalty", "TagCotConstraint", "Temperature", "TopK", "TopP"]
    names = [type(p).__name__ for p in build_chain(conf.greedy(), "speech", marker=4096)]
    assert names == ["RepetitionPenalty", "SpeechRepeatBlocking"]


def test_pick_draws_each_row_from_its_own_generator():
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    gens = lambda: [torch.Generator().manual_seed(s) for s in (11, 12, 13)]  # noqa: E731
    together = pick(scores, True, gens())
    alone = torch.cat([pick(scores[i:i + 1], True, [gens()[i]]) for i in range(3)])
    assert together.tolist() == alone.tolist()
    assert pick(scores, False).tolist() == scores.argmax(-1).tolist()


@pytest.mark.parametrize("phases,tokens,expected", [
    # text then speech: eos (9) ends the text, the second marker (0) closes the span
    ("text_speech", [1, 2, 9, 0, 5, 6, 0], "tttssss"),
    # speech only: the fed marker opened the span, the first generated one closes it
    ("speech", [5, 6, 0], "sss"),
])
def test_phase_schedule(phases, tokens, expected):
    conf = DecodeConfig(max_text_tokens=100, max_speech_tokens=100)
    st = PhaseState.start(phases)
    seen = ""
    for tok in tokens:
        seen += st.phase[0]
        st.advance(tok, eos=9, marker=0, conf=conf)
    assert seen == expected and st.done


def test_interleave_schedule_is_six_text_eighteen_speech():
    conf = DecodeConfig(max_text_tokens=100, max_speech_tokens=200)
    st = PhaseState.start("interleave")
    seen = ""
    text = iter([1] * 6 + [1, 1, 9])  # 9 text ids in all, the last is the eos
    speech = iter([0] + [5] * 60 + [0])
    while not st.done:
        seen += st.phase[0]
        st.advance(next(text) if st.phase == "text" else next(speech), eos=9, marker=0, conf=conf)
    assert seen == "t" * 6 + "s" * 18 + "t" * 3 + "s" * (62 - 18)


def test_text_cap_of_a_speech_task_forces_the_eos_then_speech_follows():
    conf = DecodeConfig(max_text_tokens=3, max_speech_tokens=100)
    st = PhaseState.start("text_speech")
    flags = []
    for tok in [1, 1, 9]:
        flags.append(st.must_end_text(conf))
        st.advance(tok, eos=9, marker=0, conf=conf)
    assert flags == [False, False, True] and st.phase == "speech"
    assert not PhaseState.start("text").must_end_text(DecodeConfig(max_text_tokens=1))


def test_caps_end_the_row_and_flag_the_phase():
    st = PhaseState.start("text_speech")
    conf = DecodeConfig(max_text_tokens=100, max_speech_tokens=100, max_total_tokens=5)
    for tok in [1, 9, 0, 4, 4]:
        st.advance(tok, eos=9, marker=0, conf=conf)
    assert st.done and st.hit_max_speech_tokens and not st.hit_max_text_tokens
    st = PhaseState.start("text")
    for tok in [1, 1, 1]:
        st.advance(tok, eos=9, marker=0, conf=DecodeConfig(max_text_tokens=3))
    assert st.done and st.hit_max_text_tokens


def test_decode_flags_give_the_decoder_kwargs():
    import argparse

    from osum_echat.generation.options import add_decode_args, decode_options_from_args
    ap = argparse.ArgumentParser()
    add_decode_args(ap)
    opts = decode_options_from_args(ap.parse_args(["--greedy", "--decode_batch_size", "4", "--prompt_style",
                                                   "upstream_infer", "--top_k", "3", "--do_sample",
                                                   "--speech_repeat_blocking", "false", "--packed_weights", "off"]))
    assert opts == dict(overrides={"top_k": 3, "do_sample": True, "speech_repeat_blocking": False}, greedy=True,
                        prompt_style="upstream_infer", batch_size=4, packed_weights="off")
    assert decode_options_from_args(ap.parse_args([])) == dict(overrides={}, greedy=False, prompt_style="train",
                                                               batch_size=1, packed_weights="auto")
