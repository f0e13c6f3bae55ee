"""The flow estimator under ONNX Runtime: same velocities, renders and streams as the torch estimator."""
import numpy as np
import pytest
import torch

from osum_echat.token2wav import Token2Wav
from osum_echat.token2wav.onnx_estimator import OnnxEstimator, resolve_backend


@pytest.fixture(scope="module")
def tiny_dir(tiny_token2wav):
    return tiny_token2wav   # conftest's random token2wav directory (make-tiny), only read here


@pytest.fixture(scope="module")
def pair(tiny_dir):
    """(torch, onnx) Token2Wav of the same directory."""
    eager, fast = Token2Wav.from_dir(tiny_dir), Token2Wav.from_dir(tiny_dir)
    fast.use_estimator("onnx")
    return eager, fast


def ids(n, seed=0):
    return torch.randint(0, 4096, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("rows, frames", [(2, 34), (4, 7), (2, 33), (6, 121)])
def test_velocities_equal_the_torch_estimator(pair, rows, frames):
    """Any batch and length (odd ones exercise the U-Net's down/up-sampling), not only the example's."""
    eager, fast = pair
    g = torch.Generator().manual_seed(rows * 1000 + frames)
    x, mu, cond = (torch.randn(rows, 80, frames, generator=g) for _ in range(3))
    t, spks = torch.rand(rows, generator=g), torch.randn(rows, 80, generator=g)
    with torch.inference_mode():
        want = eager.flow.decoder.estimator(x, None, mu, t, spks, cond)
    got = fast.flow.decoder.runner(x, None, mu, t, spks, cond)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert torch.allclose(got, want, atol=2e-5, rtol=1e-4), (got - want).abs().max()
    assert not torch.allclose(got, torch.zeros_like(got))


def test_whole_render_and_stream_match_torch(pair):
    eager, fast = pair
    codes = ids(60, 3)
    want, got = eager.synthesize(codes, noise=False), fast.synthesize(codes, noise=False)
    assert got.shape == want.shape
    assert (got - want).abs().max() < 1e-4 * max(1.0, want.abs().max().item())
    # the streamed path (windows with context and cross-fades) too, with the same noise
    streams = [torch.cat(list(t2w.stream(iter(codes), noise=True, generator=torch.Generator().manual_seed(7))))
               for t2w in (eager, fast)]
    assert streams[0].shape == streams[1].shape == want.shape
    assert (streams[0] - streams[1]).abs().max() < 1e-4 * max(1.0, streams[0].abs().max().item())


def test_switching_back_to_torch_and_the_state_dict_is_unchanged(tiny_dir):
    t2w = Token2Wav.from_dir(tiny_dir)
    keys = set(t2w.flow.state_dict())
    assert t2w.use_estimator("auto") == "onnx"
    assert set(t2w.flow.state_dict()) == keys   # the runner is not a submodule: flow.pt still round-trips
    assert t2w.use_estimator("torch") == "torch"
    assert t2w.flow.decoder.runner is None
    with pytest.raises(ValueError, match="choose one of auto, torch, onnx"):
        t2w.use_estimator("tensorrt")


def test_auto_falls_back_to_torch_when_the_export_fails_and_onnx_does_not(tiny_dir, monkeypatch):
    import logging

    from osum_echat.token2wav import onnx_estimator

    def broken(*a, **k):
        raise RuntimeError("exporter: unsupported operator")
    monkeypatch.setattr(onnx_estimator, "OnnxEstimator", broken)
    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("osum_echat.token2wav.token2wav")
    logger.addHandler(handler)
    try:
        t2w = Token2Wav.from_dir(tiny_dir)
        assert t2w.use_estimator("auto") == "torch" and t2w.flow.decoder.runner is None
        assert len(records) == 1 and "unsupported operator" in records[0].getMessage()
        assert "using the torch one" in records[0].getMessage()
        with pytest.raises(RuntimeError, match="unsupported operator"):
            t2w.use_estimator("onnx")
    finally:
        logger.removeHandler(handler)
    assert t2w.synthesize(ids(20), noise=False).abs().max() > 0   # still renders, with torch


def test_refuses_what_it_cannot_run(tiny_dir):
    t2w = Token2Wav.from_dir(tiny_dir, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="float32"):
        t2w.use_estimator("onnx")
    runner = OnnxEstimator(Token2Wav.from_dir(tiny_dir).flow.decoder.estimator, threads=1)
    x = torch.zeros(2, 80, 10)
    with pytest.raises(ValueError, match="mask None"):
        runner(x, torch.ones(2, 1, 10), x, torch.zeros(2), torch.zeros(2, 80), x)


@pytest.mark.parametrize("choice, device, dtype, want", [
    ("auto", "cpu", torch.float32, "onnx"), ("auto", "cpu", "float32", "onnx"),
    ("auto", "cpu", torch.bfloat16, "torch"), ("auto", "cuda:0", torch.float32, "torch"),
    ("auto", torch.device("npu", 0) if hasattr(torch, "npu") else "npu:0", "float32", "torch"),
    ("torch", "cpu", torch.float32, "torch"), ("onnx", "cpu", torch.float32, "onnx")])
def test_auto_picks_onnx_only_for_a_float32_cpu_flow(choice, device, dtype, want):
    assert resolve_backend(choice, device, dtype) == want


def test_the_worker_process_runs_the_chosen_estimator(tiny_dir):
    import queue
    import threading

    from osum_echat.token2wav.worker import VoiceWorker
    codes = ids(40, 5)
    local = Token2Wav.from_dir(tiny_dir)
    want = np.concatenate([c.numpy() for c in local.stream(iter(codes), noise=False)])
    for choice, expect in (("auto", "onnx"), ("torch", "torch")):
        worker = VoiceWorker(tiny_dir, threads=1, estimator=choice)  # resolved in the worker process
        try:
            assert worker.estimator == expect  # as the worker process reported it in "ready"
            events = queue.Queue()
            voice = worker.open(None, events, threading.Event())
            for c in codes:
                voice.push(c)
            voice.finish()
            packets = []
            while True:
                kind, value = events.get(timeout=60)
                if kind != "audio":
                    assert kind == "voice_end" and value is None
                    break
                packets.append(value)
        finally:
            worker.close()
        got = np.concatenate(packets)
        assert got.shape == want.shape
        # noise is on in the worker (seeded per stream), so compare the spectra's scale, not samples
        assert np.isfinite(got).all() and 0.5 < np.abs(got).mean() / np.abs(want).mean() < 2.0
