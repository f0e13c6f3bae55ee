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
