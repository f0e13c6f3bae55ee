import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from osum_echat import tasks
from osum_echat.config import load_config
from osum_echat.data.dataset import build_dataset, one_by_one_config
from osum_echat.generation.decode import Decoder, select_item, split_think
from osum_echat.models import build_model

N_WAVS = 4


def _lively(model, seed=0):
    """Random weights with a wider spread: Qwen's 0.02 init makes the tiny LLM repeat one id forever."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and not name.startswith("encoder"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("decode")
    rng = np.random.default_rng(0)
    for i in range(N_WAVS):  # different lengths: 0.6 s .. 1.5 s
        t = np.arange(9600 + 4800 * i) / 16000
        wav = 0.3 * np.sin(2 * np.pi * (220 + 60 * i) * t) + 0.01 * rng.standard_normal(len(t))
        sf.write(root / f"a{i}.wav", wav.astype("float32"), 16000)
    rows = [{"key": f"asr{i}", "wav": f"a{i}.wav", "txt": "hello world", "task": "<TRANSCRIBE>"}
            for i in range(N_WAVS)]
    rows += [{"key": f"s2s{i}", "wav": f"a{i}.wav", "txt": "i am fine", "task": "<S2TCHAT> <TEXT2TOKEN>",
              "extra": {"speech_token": [5, 6, 7, 8]}} for i in range(N_WAVS)]
    rows += [{"key": f"tts{i}", "txt": "good morning " * (i + 1), "task": "<TEXT2TOKEN>",
              "extra": {"speech_token": [9, 10, 11]}} for i in range(N_WAVS)]
    rows += [{"key": "t2t", "txt": "fine", "task": "<TEXT2TEXT>", "extra": {"question": "how are you"}},
             {"key": "think", "wav": "a0.wav", "txt": "ok", "task": "<S2TCHAT> <THINKER>"},
             {"key": "stream", "wav": "a1.wav", "txt": "i am fine", "task": "<S2TCHAT> <TEXT2TOKEN> <STREAMING>"}]
    (root / "data.list").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = one_by_one_config(load_config("conf/tiny_ct_config.yaml"))
    torch.manual_seed(0)
    model = _lively(build_model(cfg, tokenizer=tiny_tokenizer).eval())
    batches = {b.keys[0]: b for b in build_dataset(cfg, "raw", str(root / "data.list"), tiny_tokenizer,
                                                    root=str(root), mode="decode")}
    return model, batches, cfg


def merge(batches: list):
    """Items of one output type as one padded Batch (as the pipeline would batch them)."""
    from torch.nn.utils.rnn import pad_sequence
    out = {}
    for f in dataclasses.fields(batches[0]):
        vals = [getattr(b, f.name) for b in batches]
        if isinstance(vals[0], torch.Tensor) and vals[0].dim() >= 2:
            pad = -100 if f.name in ("target", "speech_tokens") else (-1 if f.name == "prompt" else 0)
            out[f.name] = pad_sequence([v[0] for v in vals], batch_first=True, padding_value=pad)
        elif isinstance(vals[0], torch.Tensor) and vals[0].dim() == 1:
            out[f.name] = torch.cat(vals)
        elif isinstance(vals[0], list):
            out[f.name] = [x for v in vals for x in v]
        else:
            out[f.name] = vals[0]
    return dataclasses.replace(batches[0], **out)


def two_phase_reference(model, item, spec, steps):
    """Independent greedy reference: recompute the whole sequence every step (no cache); text head
    and text table until the text eos, then speech head and speech table (speech-only: marker fed)."""
    x = model.assemble(item, with_output=False)
    real = x.attention_mask[0]  # holes in the assembly (the text input's eos slot) are not attended
    embeds, pos = x.inputs_embeds[:, real], x.position_ids[:, real]
    marker = model.speech_token_num - 1
    speech = spec.decode_phases == "speech"
    produced = []
    if speech:
        embeds = torch.cat([embeds, model.speech_token_emded(torch.tensor([[marker]]))], 1)
        pos = torch.cat([pos, pos[:, -1:] + 1], 1)
    for _ in range(steps):
        h = model.base_llm().model(inputs_embeds=embeds, position_ids=pos).last_hidden_state[:, -1]
        nxt = int((model.speech_head(h) if speech else model.lm_head(h))[0].argmax())
        produced.append(nxt + model.llm_vocab_size if speech else nxt)
        table = model.speech_token_emded if speech else model.embed_tokens
        embeds = torch.cat([embeds, table(torch.tensor([[nxt]]))], 1)
        pos = torch.cat([pos, pos[:, -1:] + 1], 1)
        speech = speech or nxt == model.text_ids.eos and spec.speech_output
    return produced


@torch.no_grad()
@pytest.mark.parametrize("key", ["asr0", "s2s1", "tts2"])
def test_cached_two_phase_decoding_equals_full_recompute(setup, ending_model, key):
    model, batches = ending_model, setup[1]
    batch = batches[key]
    spec = tasks.get_task(batch.task[0])
    hyp = Decoder(model, dict(max_text_tokens=40, max_speech_tokens=12), greedy=True).decode(batch)[0]
    assert not hyp.hit_max_text_tokens
    fed = 1 if spec.decode_phases == "speech" else 0
    ref = two_phase_reference(model, select_item(batch, 0), spec, len(hyp.raw_ids) - fed)
    assert hyp.raw_ids[fed:] == ref and hyp.error is None


@torch.no_grad()
def test_speech_phase_scores_speech_codes_only_and_text_phase_text_only(setup):
    model, batches, _ = setup
    v = model.llm_vocab_size
    hyp = Decoder(model, dict(max_text_tokens=3, max_speech_tokens=5), greedy=True).decode(batches["tts0"])[0]
    assert hyp.raw_ids[0] == v + model.speech_token_num - 1  # the fed span marker
    assert all(i >= v for i in hyp.raw_ids) and hyp.text == ""
    hyp = Decoder(model, dict(max_text_tokens=6), greedy=True).decode(batches["asr0"])[0]
    assert all(i < v for i in hyp.raw_ids) and hyp.speech_tokens == []


@pytest.fixture(scope="module")
def ending_model(setup):
    """The lively model made to emit the text eos and the span marker now and then, so rows of a
    batch end their phases at different steps."""
    import copy
    model = copy.deepcopy(setup[0])
    with torch.no_grad():
        model.embed_tokens.weight[model.text_ids.eos] *= 6
        model.speech_head.bias[model.speech_token_num - 1] = 3.0
    return model


@torch.no_grad()
@pytest.mark.parametrize("prefix", ["asr", "tts", "s2s"])
def test_batched_left_padded_decoding_equals_one_by_one(setup, ending_model, prefix):
    _, batches, _ = setup
    model = ending_model
    batch = merge([batches[f"{prefix}{i}"] for i in range(N_WAVS)])
    over = dict(max_text_tokens=10, max_speech_tokens=12)
    together = Decoder(model, over, greedy=True, batch_size=4).decode(batch)
    alone = [Decoder(model, over, greedy=True).decode(batches[k])[0] for k in batch.keys]
    assert [h.key for h in together] == batch.keys
    assert [h.raw_ids for h in together] == [h.raw_ids for h in alone]
    if prefix != "asr":  # rows end their phases at different steps
        assert len({len(h.raw_ids) for h in together}) > 1
        assert any(not h.hit_max_speech_tokens and not h.hit_max_text_tokens for h in together)


@torch.no_grad()
@pytest.mark.parametrize("prefix", ["tts", "s2s"])
@pytest.mark.parametrize("slack", [0.0, 100.0])
def test_growing_cache_and_packed_weights_keep_the_ids(setup, ending_model, prefix, slack, monkeypatch):
    """Forced at tiny sizes (buffers grow every step, every linear packed), a batch of 4 - shared
    prefix once, rows prefilled alone (slack 0) or together, stepped together on packed weights -
    still gives each item the ids of the no-cache, no-batch reference."""
    from osum_echat.generation import kv_cache, packed_linear, prefill
    monkeypatch.setattr(prefill, "PAD_SLACK", slack)
    monkeypatch.setattr(kv_cache, "MIN_SPARE", 1)
    monkeypatch.setattr(packed_linear, "MIN_NUMEL", 0)
    packed_rows = []
    real = packed_linear._forward
    monkeypatch.setattr(packed_linear, "_forward",
                        lambda m, p, x: packed_rows.append(x.numel() // x.shape[-1]) or real(m, p, x))
    batches, model = setup[1], ending_model
    batch = merge([batches[f"{prefix}{i}"] for i in range(N_WAVS)])
    spec = tasks.get_task(batch.task[0])
    hyps = Decoder(model, dict(max_text_tokens=40, max_speech_tokens=12), greedy=True, batch_size=4,
                   packed_weights="on").decode(batch)
    assert 4 in packed_rows and not any(h.hit_max_text_tokens for h in hyps)
    fed = 1 if spec.decode_phases == "speech" else 0
    for i, hyp in enumerate(hyps):
        ref = two_phase_reference(model, select_item(batch, i), spec, len(hyp.raw_ids) - fed)
        assert hyp.raw_ids[fed:] == ref


@torch.no_grad()
@pytest.mark.parametrize("dtype,packed", [(torch.bfloat16, "off"), (torch.bfloat16, "on"), (torch.float16, "auto")])
def test_half_precision_decodes_every_task(setup, tiny_tokenizer, dtype, packed, monkeypatch):
    from osum_echat.generation import packed_linear
    monkeypatch.setattr(packed_linear, "MIN_NUMEL", 0)  # "on": every bfloat16 linear packed, from one row
    used = []
    real = packed_linear._forward
    monkeypatch.setattr(packed_linear, "_forward", lambda m, p, x: used.append(1) or real(m, p, x))
    _, batches, cfg = setup
    model = build_model(cfg, tokenizer=tiny_tokenizer).eval().to(dtype)
    dec = Decoder(model, dict(max_text_tokens=4, max_speech_tokens=4), greedy=True, packed_weights=packed)
    for key in ["asr0", "s2s0", "tts0", "t2t", "think", "stream"]:
        hyp = dec.decode(batches[key])[0]
        assert hyp.error is None and len(hyp.raw_ids) > 0, key
    assert bool(used) == (packed == "on")  # float16 has no packs


@torch.no_grad()
def test_bad_items_get_an_error_and_the_batch_goes_on(setup):
    model, batches, _ = setup
    asr = merge([batches["asr0"], batches["asr3"]])  # asr3 is 1.5 s
    hyps = Decoder(model, dict(max_text_tokens=3, max_audio_frames=120), greedy=True, batch_size=2).decode(asr)
    assert hyps[0].error is None and hyps[0].raw_ids
    assert hyps[1].error.startswith("audio_too_long:") and hyps[1].raw_ids == [] and "asr3" in hyps[1].error

    tts = merge([batches["tts0"], batches["tts1"]])
    eos = model.text_ids.eos
    tts.target[1, 0], tts.target_lengths[1] = eos, 1  # nothing left but the eos
    hyps = Decoder(model, dict(max_speech_tokens=3), greedy=True, batch_size=2).decode(tts)
    assert hyps[0].error is None and hyps[1].error.startswith("empty_text:")

    dec = Decoder(model, dict(max_text_tokens=3), greedy=True)
    dec.context = 40  # a context shorter than the prompt
    assert dec.decode(batches["asr0"])[0].error.startswith("prompt_too_long:")


@torch.no_grad()
def test_caps_set_the_hit_flags(setup):
    model, batches, _ = setup
    hyp = Decoder(model, dict(max_text_tokens=3), greedy=True).decode(batches["asr0"])[0]
    assert len(hyp.raw_ids) == 3 and hyp.hit_max_text_tokens and not hyp.hit_max_speech_tokens
    hyp = Decoder(model, dict(max_speech_tokens=4), greedy=True).decode(batches["tts0"])[0]
    assert len(hyp.raw_ids) == 1 + 4 and hyp.hit_max_speech_tokens
    # a speech task's text cap cuts the answer with an eos; the speech still follows
    hyp = Decoder(model, dict(max_text_tokens=3, max_speech_tokens=4), greedy=True).decode(batches["s2s0"])[0]
    assert hyp.raw_ids[2] == model.text_ids.eos and hyp.hit_max_text_tokens
    assert len(hyp.raw_ids) == 3 + 4 and hyp.hit_max_speech_tokens and len(hyp.speech_tokens) > 0


@torch.no_grad()
def test_sampling_is_reproducible_per_utterance_whatever_the_batch(setup):
    model, batches, _ = setup
    batch = merge([batches[f"tts{i}"] for i in range(3)])
    over = dict(max_speech_tokens=15)
    together = Decoder(model, over, batch_size=3).decode(batch)  # the TTS preset samples
    alone = [Decoder(model, over).decode(batches[f"tts{i}"])[0] for i in range(3)]
    assert [h.raw_ids for h in together] == [h.raw_ids for h in alone]
    assert together[0].raw_ids != Decoder(model, over, greedy=True).decode(batches["tts0"])[0].raw_ids
    assert len({tuple(h.speech_tokens) for h in together}) == 3


def test_presets_come_from_the_task_table_and_overrides_and_greedy_apply_to_all(setup):
    model, _, _ = setup
    asr, tts, t2t = tasks.get_task("<TRANSCRIBE>"), tasks.get_task("<TEXT2TOKEN>"), tasks.get_task("<TEXT2TEXT>")
    dec = Decoder(model)
    assert (dec.config_for(asr).top_k, dec.config_for(asr).repetition_penalty) == (5, 1.05)
    assert (dec.config_for(tts).top_k, dec.config_for(tts).temperature) == (15, 1.2)
    assert dec.config_for(t2t).do_sample is False and dec.config_for(t2t).max_text_tokens == 200
    dec = Decoder(model, dict(top_k=3), greedy=True)
    assert all(dec.config_for(s).top_k == 3 and not dec.config_for(s).do_sample for s in (asr, tts, t2t))
    with pytest.raises(ValueError, match="unknown decode override"):
        Decoder(model, dict(topk=3))


@torch.no_grad()
def test_upstream_infer_prompt_differs_only_where_upstream_does(setup):
    model, batches, _ = setup
    lengths = {}
    for style in ("train", "upstream_infer"):
        dec = Decoder(model, prompt_style=style)
        for key in ("asr0", "think", "s2s0", "tts0", "t2t"):
            spec = tasks.get_task(batches[key].task[0])
            lengths[style, key] = len(dec._prompt(select_item(batches[key], 0), 0, spec, dec.config_for(spec)).embeds)
    user_start = len(model._text(tasks.USER_START))
    assert lengths["upstream_infer", "think"] == lengths["train", "think"] - user_start
    assert lengths["upstream_infer", "asr0"] != lengths["train", "asr0"]
    assert all(lengths["upstream_infer", k] == lengths["train", k] for k in ("s2s0", "tts0", "t2t"))


def test_overfit_model_decodes_its_training_target(setup, tiny_tokenizer):
    """Train on one utterance until it is memorised; greedy decoding must give the target back."""
    _, batches, cfg = setup
    torch.manual_seed(1)
    model = build_model(cfg, tokenizer=tiny_tokenizer)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = batches["s2s0"]
    tokens = torch.tensor([[4096, 5, 6, 7, 8, 4096]])
    train = dataclasses.replace(batch, speech_tokens=tokens, speech_tokens_length=torch.tensor([6]))
    for _ in range(150):
        loss = model(train)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            break
    model.eval()
    hyp = Decoder(model, dict(max_text_tokens=20, max_speech_tokens=20), greedy=True).decode(batch)[0]
    assert hyp.text == "i am fine"
    assert hyp.speech_tokens == [5, 6, 7, 8] and not hyp.hit_max_speech_tokens


def test_split_think():
    assert split_think("<think>user is sad<think end>I am here.") == ("user is sad", "I am here.")
    assert split_think("plain answer") == ("", "plain answer")
