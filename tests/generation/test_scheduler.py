"""Continuous batching: requests of different tasks that join a running batch at different steps and
leave it when done or cancelled get the ids they get decoded alone."""
import json
import threading

import numpy as np
import pytest
import soundfile as sf
import torch

from osum_echat import tasks
from osum_echat.config import load_config
from osum_echat.data.dataset import build_dataset, one_by_one_config
from osum_echat.generation import kv_cache, scheduler as scheduler_module
from osum_echat.generation.decode import Decoder, select_item
from osum_echat.generation.scheduler import Scheduler
from osum_echat.models import build_model

OVER = dict(max_text_tokens=14, max_speech_tokens=20)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("sched")
    rng = np.random.default_rng(1)
    for i, seconds in enumerate((0.6, 1.4, 2.5)):  # prompts of very different lengths
        t = np.arange(int(16000 * seconds)) / 16000
        sf.write(root / f"a{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 90 * i) * t)
                                      + 0.01 * rng.standard_normal(len(t))).astype("float32"), 16000)
    rows = [{"key": "asr", "wav": "a2.wav", "txt": "x", "task": "<TRANSCRIBE>"},
            {"key": "s2s", "wav": "a0.wav", "txt": "x", "task": "<S2TCHAT> <TEXT2TOKEN>"},
            {"key": "tts", "txt": "good morning " * 3, "task": "<TEXT2TOKEN>"},
            {"key": "stream", "wav": "a1.wav", "txt": "x", "task": "<S2TCHAT> <TEXT2TOKEN> <STREAMING>"},
            {"key": "t2t", "txt": "fine", "task": "<TEXT2TEXT>", "extra": {"question": "how are you"}}]
    (root / "d.list").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = one_by_one_config(load_config("conf/tiny_ct_config.yaml"))
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer=tiny_tokenizer).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a wider spread than Qwen's init, and ends now and then (rows leave at different steps)
        for name, p in model.named_parameters():
            if p.dim() >= 2 and not name.startswith("encoder"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
        model.embed_tokens.weight[model.text_ids.eos] *= 6
        model.speech_head.bias[model.speech_token_num - 1] = 3.0
    batches = {b.keys[0]: b for b in build_dataset(cfg, "raw", str(root / "d.list"), tiny_tokenizer,
                                                    root=str(root), mode="decode")}
    return model, batches


def prompt(model, batch, greedy, over=OVER):
    dec = Decoder(model, over, greedy=greedy)
    spec = tasks.get_task(batch.task[0])
    conf = dec.config_for(spec)
    return spec, conf, dec.prompt(select_item(batch, 0), spec, conf)


class Collector:
    def __init__(self):
        self.ids, self.done, self.hyp = [], threading.Event(), None
        self.then = {}  # after n ids: call

    def __call__(self, kind, value):
        if kind == "token":
            self.ids.append(value)
            action = self.then.pop(len(self.ids), None)
            if action:
                action()
        else:
            self.hyp = value
            self.done.set()


@torch.no_grad()
def test_requests_joining_a_running_batch_get_their_solo_ids(setup, monkeypatch):
    monkeypatch.setattr(kv_cache, "MIN_SPARE", 1)  # buffers grow while rows join and leave
    monkeypatch.setattr(scheduler_module, "TRIM_COLUMNS", 1)  # and shrink when a longer prompt has left
    model, batches = setup
    # greedy and sampled rows (each task's own preset: processors, temperature, top-k/p) in one batch
    plan = [("s2s", False), ("asr", True), ("tts", False), ("stream", True), ("t2t", True)]
    solo = {k: Decoder(model, OVER, greedy=g).decode(batches[k])[0] for k, g in plan}
    sched = Scheduler(model)
    got = {k: Collector() for k, _ in plan}

    def submit(k, greedy):
        spec, conf, embeds = prompt(model, batches[k], greedy)
        sched.submit(k, spec, conf, embeds, got[k])

    # the others join the first one's batch after its 2nd, 4th, 6th and 8th id
    for i, (k, g) in enumerate(plan[1:], 1):
        got[plan[0][0]].then[2 * i] = lambda k=k, g=g: submit(k, g)
    submit(*plan[0])
    for c in got.values():
        assert c.done.wait(60)
    sched.close()
    for k, _ in plan:
        assert got[k].hyp.raw_ids == solo[k].raw_ids, k
        fed = tasks.get_task(batches[k].task[0]).decode_phases == "speech"  # the marker fed, not decoded
        raw = [t if ph == "text" else model.llm_vocab_size + t for ph, t in got[k].ids]
        assert raw == solo[k].raw_ids[fed:], k  # every id was delivered, in order, as it was decoded
    assert sched.max_batch >= 3 and sched.active_rows() == 0
    assert len({len(solo[k].raw_ids) for k, _ in plan}) > 2  # they left at different steps
    assert sched.trimmed > 0  # the long ASR prompt's padding went with it


@torch.no_grad()
def test_a_cancelled_row_leaves_at_the_next_step_and_the_others_go_on(setup):
    model, batches = setup
    marker = model.speech_token_num - 1
    bias = float(model.speech_head.bias[marker])
    model.speech_head.bias[marker] = -10.0  # the speech span does not close by itself: only the cap or a cancel end it
    try:
        over = dict(max_text_tokens=14, max_speech_tokens=400)
        solo = Decoder(model, OVER, greedy=True).decode(batches["s2s"])[0]
        sched = Scheduler(model)
        long_, short = Collector(), Collector()
        spec, conf, embeds = prompt(model, batches["tts"], True, over)
        ticket = sched.submit("tts", spec, conf, embeds, long_)
        long_.then[5] = lambda: sched.submit("s2s", *prompt(model, batches["s2s"], True), short)
        short.then[2] = ticket.cancel
        assert long_.done.wait(60) and short.done.wait(60)
        sched.close()
    finally:
        model.speech_head.bias[marker] = bias
    assert short.hyp.raw_ids == solo.raw_ids and len(solo.raw_ids) > 4
    assert long_.hyp.raw_ids[1:] == [model.llm_vocab_size + t for _, t in long_.ids]
    assert 5 + 2 <= len(long_.ids) <= 5 + 2 + 1  # it left at the step boundary after the cancel
    assert ticket.done.is_set() and sched.active_rows() == 0 and sched.max_batch == 2


def test_a_failing_prefill_ends_its_request_only(setup):
    model, batches = setup
    sched = Scheduler(model)
    bad, good = Collector(), Collector()
    spec, conf, embeds = prompt(model, batches["t2t"], True)
    sched.submit("bad", spec, conf, embeds[:, :3], bad)  # embeds of the wrong width
    sched.submit("good", spec, conf, embeds, good)
    assert bad.done.wait(30) and good.done.wait(30)
    sched.close()
    assert isinstance(bad.hyp, str) and bad.hyp.startswith("decode_error:")
    assert good.hyp.raw_ids == Decoder(model, OVER, greedy=True).decode(batches["t2t"])[0].raw_ids


def test_a_failing_step_ends_the_rows_in_it_and_the_loop_goes_on(setup):
    model, batches = setup
    sched = Scheduler(model)
    first, second = Collector(), Collector()
    llm = model.base_llm().model

    def fail_once(module, args, kwargs):
        if kwargs["inputs_embeds"].shape[1] == 1 and not failed:  # a decode step, not a prefill
            failed.append(1)
            raise RuntimeError("device lost")

    failed = []
    handle = llm.register_forward_pre_hook(fail_once, with_kwargs=True)
    try:
        sched.submit("s2s", *prompt(model, batches["s2s"], True), first)
        assert first.done.wait(30)
    finally:
        handle.remove()
    assert first.hyp == "decode_error: RuntimeError: device lost" and sched.active_rows() == 0
    sched.submit("s2s", *prompt(model, batches["s2s"], True), second)
    assert second.done.wait(30) and sched.running
    sched.close()
    assert second.hyp.raw_ids == Decoder(model, OVER, greedy=True).decode(batches["s2s"])[0].raw_ids
    assert not sched.running
