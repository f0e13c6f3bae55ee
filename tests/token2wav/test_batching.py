"""Streamed windows of concurrent utterances solved as one batch: each stream gets the audio it gets alone."""
import threading

import pytest
import torch

from osum_echat.bin import token2wav as cli
from osum_echat.token2wav import Token2Wav
from osum_echat.token2wav.batching import SolveBatcher


@pytest.fixture(scope="module")
def t2w(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_t2w_batch")
    assert cli.main(["make-tiny", str(out)]) == 0
    return Token2Wav.from_dir(out)


def ids(n, seed):
    return torch.randint(0, 4096, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_aligned_windows_of_concurrent_streams_are_solved_together(t2w):
    utterances = [ids(60, 1), ids(60, 2), ids(60, 3)]  # same length and prompt: every window lines up
    alone = [torch.cat(list(t2w.stream(iter(u), noise=False))) for u in utterances]
    batcher = SolveBatcher(t2w, max_wait_s=30.0, gather_fraction=1e6)  # wait until every open stream joins
    out = [None] * len(utterances)

    def run(i):
        out[i] = torch.cat(list(t2w.stream(iter(utterances[i]), noise=False, solver=batcher.solve)))

    with batcher.stream(), batcher.stream(), batcher.stream():  # all three open before any window
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(utterances))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    windows = 4  # 10, 25, 55 tokens, then the last one at 60
    assert (batcher.solves, batcher.rows) == (windows, 3 * windows)
    for got, want in zip(out, alone):
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-4)
        assert not torch.equal(out[0], out[1])  # each stream got its own rows back


def test_a_lone_stream_does_not_wait_and_windows_that_do_not_line_up_are_not_merged(t2w):
    batcher = SolveBatcher(t2w, max_wait_s=30.0, gather_fraction=1e6)
    with batcher.stream():  # only one open stream: no waiting at all
        torch.cat(list(t2w.stream(iter(ids(30, 4)), noise=False, solver=batcher.solve)))
    assert (batcher.solves, batcher.rows) == (3, 3)
    batcher = SolveBatcher(t2w, max_wait_s=0.3, gather_fraction=1e6)
    errors = []

    def run(n, seed):
        try:
            with batcher.stream():
                list(t2w.stream(iter(ids(n, seed)), noise=False, solver=batcher.solve))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n, s)) for n, s in ((12, 5), (40, 6))]  # different windows
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and batcher.rows == 2 + 3  # every window solved once ...
    assert batcher.solves >= 4  # ... and the last windows (2 and 15 tokens) of different shapes apart


def test_the_gate_goes_to_the_most_urgent_waiter_and_a_long_holder_lets_it_in():
    from osum_echat.token2wav.batching import PriorityGate

    gate, order, started = PriorityGate(), [], []
    holder = gate.enqueue(5.0)
    assert holder[2].is_set()  # a free gate is granted at once

    def waiter(priority):
        started.append(priority)
        with gate.hold(priority):
            order.append(priority)

    threads = []
    for p in (3.0, 1.0, 2.0):  # queued in this order while the gate is held
        threads.append(threading.Thread(target=waiter, args=(p,)))
        threads[-1].start()
        while len(started) < len(threads) or len(gate._waiters) < len(threads):
            threading.Event().wait(0.001)
    gate.yield_to_urgent(holder)  # all three are more urgent than 5.0: they run before the holder resumes
    assert order == [1.0, 2.0, 3.0]
    gate.release()
    for t in threads:
        t.join(5)
    late = gate.enqueue(0.0)
    assert late[2].is_set()
    gate.yield_to_urgent(late)  # nobody waits: it keeps the gate
    gate.release()


def test_a_new_utterance_renders_its_first_window_before_the_later_windows_of_a_long_one(t2w):
    """Earliest deadline first: a stream that has played nothing yet goes before one whose listener
    still has seconds of audio queued, though the latter asked first."""
    from osum_echat.token2wav.streaming import StreamConfig

    batcher, solved = SolveBatcher(t2w), []
    solve = t2w.flow.decoder.solve

    def logged(z, *a, **k):
        solved.append(z.shape[-1])
        return solve(z, *a, **k)

    errors, lengths = [], {}

    def run(name, deadline, first_chunk):
        try:
            with batcher.stream(lambda: deadline) as turns:
                conf = StreamConfig(first_chunk=first_chunk)
                mel = []
                list(t2w.stream(iter(ids(first_chunk, 9)), noise=False, config=conf, mel_out=mel,
                                solver=turns.solve, gate=turns.turn))
                lengths[name] = sum(m.shape[-1] for m in mel)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t2w.flow.decoder.solve = logged
    try:
        holder = batcher.gate.enqueue(0.0)  # the estimator is busy while both queue up
        assert holder[2].is_set()
        old = threading.Thread(target=run, args=("old", 100.0, 12))  # its listener has audio until t=100
        new = threading.Thread(target=run, args=("new", 1.0, 20))
        old.start()
        while len(batcher.gate._waiters) < 1:
            threading.Event().wait(0.001)
        new.start()
        while len(batcher.gate._waiters) < 2:
            threading.Event().wait(0.001)
        batcher.gate.release()
        old.join(30)
        new.join(30)
    finally:
        t2w.flow.decoder.solve = solve
    assert not errors and len(solved) == 2
    assert solved[0] - solved[1] == lengths["new"] - lengths["old"] > 0  # the new stream's window went first
