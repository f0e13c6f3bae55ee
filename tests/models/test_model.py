"""OSUM-EChat at tiny size: every output_type trains, batches equal their
items, the sequence layout follows the task table."""
import copy
import os
import sys

import pytest
import torch

from osum_echat import tasks
from osum_echat.models.loss import IGNORE_ID
from osum_echat.models.osum_echat import interleave_text_speech, spec_for_output_type

sys.path.insert(0, os.path.dirname(__file__))
from osum_model_helpers import make_batch, select, tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def model(tiny_config):
    return tiny_model(tiny_config)


def _history(seed):
    g = torch.Generator().manual_seed(seed)
    return [{"wav": torch.randn(40, 80, generator=g), "txt": "good morning", "speech_token": [3, 4, 5]},
            {"wav": torch.randn(26, 80, generator=g), "txt": "thank you"}]


def _batch(model, output_type, **kw):
    args = dict(texts=["i am very happy to see you", "i am very happy to see you"],
                feat_lens=[96, 60], n_speech=[40, 25],
                prompts=["transcribe the audio", "what is the emotion of the speaker?"],
                history=[_history(1), _history(2)[:1]])
    args.update(kw)
    return make_batch(model.tokenizer, output_type, **args)


@pytest.mark.parametrize("output_type", tasks.OUTPUT_TYPES)
def test_every_output_type_trains_a_step(tiny_config, output_type):
    model = tiny_model(tiny_config, seed=5).train()
    spec = spec_for_output_type(output_type)
    batch = _batch(model, output_type)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    first = model(batch)
    assert first["output_type"] == output_type and torch.isfinite(first["loss"])
    first["loss"].backward()
    grad = lambda m: m.weight.grad is not None and m.weight.grad.abs().sum() > 0  # noqa: E731
    assert grad(model.embed_tokens)
    assert grad(model.encoder.embed.conv[0]) == spec.speech_input
    assert grad(model.speech_head) == spec.speech_output
    opt.step()
    torch.manual_seed(0)
    assert model(batch)["loss"] < first["loss"]


@pytest.mark.parametrize("output_type", tasks.OUTPUT_TYPES)
def test_batch_loss_is_token_weighted_mean_of_items(model, output_type):
    model.eval()
    batch = _batch(model, output_type)
    with torch.no_grad():
        whole = model(batch)
        items = [model(select(batch, i)) for i in range(2)]
    assert whole["num_tokens"] == sum(o["num_tokens"] for o in items)
    mean = sum(o["loss"] * o["num_tokens"] for o in items) / whole["num_tokens"]
    torch.testing.assert_close(whole["loss"], mean, rtol=1e-5, atol=1e-6)


def test_counted_targets_are_text_then_offset_speech(model):
    tok = model.tokenizer
    batch = _batch(model, "speech2text_token")
    unk = model.text_ids.unk_tag
    batch["target"][1, 2] = unk  # an "&&" label: no loss, no attention
    x = model.assemble(batch)
    vocab = model.llm_vocab_size
    for i in range(2):
        counted = x.target[i][x.target[i] != IGNORE_ID]
        n_text = int(batch["target_lengths"][i])
        text = batch["target"][i, :n_text]
        text = text[text != unk]
        n_speech = int(batch["speech_tokens_length"][i])
        expect = torch.cat([text, batch["speech_tokens"][i, :n_speech] + vocab])
        assert torch.equal(counted, expect)
        assert not bool(x.attention_mask[i][x.target[i] == unk].any())
    # position ids count real positions only; holes get 1
    mask = x.attention_mask
    assert torch.equal(x.position_ids[mask], torch.cat([torch.arange(int(m.sum())) for m in mask]))
    assert bool((x.position_ids[~mask] == 1).all())
    # the sequence opens with the task's system text
    sys_ids = tok(spec_for_output_type("speech2text_token").system_text)["input_ids"]
    torch.testing.assert_close(x.inputs_embeds[0, :len(sys_ids)], model.embed_tokens(torch.tensor(sys_ids)))


def test_speech_input_is_wrapped_with_speech_bos_and_eos_rows(model):
    model.eval()
    batch = _batch(model, "s2t_chat")
    x = model.assemble(batch)
    tok = model.tokenizer
    start = len(tok(spec_for_output_type("s2t_chat").system_text)["input_ids"])
    n = model.speech_token_num
    bos = model.speech_token_emded.weight[n]
    eos = model.speech_token_emded.weight[n + 1]
    torch.testing.assert_close(x.inputs_embeds[1, start], bos)
    speech, mask = model.embed_speech(batch["feats"], batch["feats_lengths"])
    end = start + 1 + speech.size(1)  # eos sits after the padding of the longest item
    torch.testing.assert_close(x.inputs_embeds[1, end], eos)
    assert not bool(x.attention_mask[1, start + 1 + int(mask[1].sum()):end].any())


def test_text_to_speech_feeds_the_text_without_eos(model):
    batch = _batch(model, "text2token")
    x = model.assemble(batch)
    counted = x.target[0][x.target[0] != IGNORE_ID]
    assert bool((counted >= model.llm_vocab_size).all())  # speech only
    text = batch["target"][0, : int(batch["target_lengths"][0]) - 1]
    embeds = model.embed_tokens(text)
    row = x.inputs_embeds[0]
    hits = [i for i in range(row.size(0) - len(text)) if torch.equal(row[i:i + len(text)], embeds)]
    assert hits, "the input text (without eos) is in the sequence"


def test_streaming_interleaves_six_text_eighteen_speech():
    text = torch.arange(100, 114)  # 14 text ids
    speech = torch.arange(1000, 1050)  # 50 speech ids
    out = interleave_text_speech(text, speech).tolist()
    expect = (list(range(100, 106)) + list(range(1000, 1018)) + list(range(106, 112))
              + list(range(1018, 1036)) + list(range(112, 114)) + list(range(1036, 1050)))
    assert out == expect


def test_streaming_rejects_too_few_speech_tokens(model):
    batch = _batch(model, "speech2text_token_streaming", n_speech=[40, 3])
    with pytest.raises(ValueError, match="utt1"):
        model(batch)


def test_history_changes_the_loss_and_empty_history_adds_nothing(model):
    model.eval()
    with torch.no_grad():
        with_h = model(_batch(model, "speech2text_token_history"))["loss"]
        without = model(_batch(model, "speech2text_token_history", history=[[], []]))["loss"]
        plain = model(_batch(model, "speech2text_token", history=[[], []]))["loss"]
    assert not torch.allclose(with_h, without)
    torch.testing.assert_close(without, plain)  # same system prompt, no history segment


def test_llm_gradient_checkpointing_gives_equal_gradients(tiny_config):
    plain = tiny_model(tiny_config, seed=2).train()
    ckpt = copy.deepcopy(plain)
    ckpt.enable_llm_gradient_checkpointing()
    assert all(layer.gradient_checkpointing for layer in ckpt.base_llm().model.layers)
    ckpt.encoder.gradient_checkpointing = True
    batch = _batch(plain, "speech2text_token")
    for m in (plain, ckpt):
        torch.manual_seed(0)
        m(batch)["loss"].backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        if a.grad is None:
            assert b.grad is None, name
            continue
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_lora_model_trains(tiny_config):
    model = tiny_model(tiny_config, use_lora=True, lora_rank=4)
    names = [n for n, _ in model.named_parameters()]
    assert any("lora_A" in n for n in names)
    out = model(_batch(model, "text"))
    out["loss"].backward()
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora and all(p.grad is not None for p in lora)


def test_bfloat16_llm_with_float32_encoder_and_heads(tiny_config):
    model = tiny_model(tiny_config)
    model.llama_model.to(torch.bfloat16)  # as upstream builds the LLM; the rest stays float32
    out = model(_batch(model, "speech2text_token"))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert model.speech_head.weight.grad.dtype == torch.float32
    assert model.embed_tokens.weight.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("adapter_type, rate", [("osum_echat2", 4), ("osum_echat", 1), ("osum_echat", 8)])
def test_other_adapters_train(tiny_config, adapter_type, rate):
    model = tiny_model(tiny_config, adapter_type=adapter_type, downsample_rate=rate)
    batch = _batch(model, "s2t_chat")
    speech, mask = model.embed_speech(batch["feats"], batch["feats_lengths"])
    halved = 2 if adapter_type == "osum_echat2" else rate
    assert speech.size(1) == -(-48 // halved) and int(mask[1].sum()) == -(-30 // halved)
    out = model(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert all(p.grad is not None for p in model.down_sample_2.parameters() if p.requires_grad)


def test_assemble_without_output_is_the_decoding_prompt(model):
    batch = _batch(model, "text2text")
    full = model.assemble(batch)
    batch.update(target=None, target_lengths=None)
    prompt = model.assemble(batch, with_output=False)
    width = prompt.inputs_embeds.size(1)
    torch.testing.assert_close(prompt.inputs_embeds, full.inputs_embeds[:, :width])
    assert bool((prompt.target == IGNORE_ID).all())
    tail = model.tokenizer(tasks.ASSISTANT_START)["input_ids"]
    torch.testing.assert_close(prompt.inputs_embeds[0, -len(tail):], model.embed_tokens(torch.tensor(tail)))


def test_history_turns_are_encoded_once_at_inference_and_always_in_training(tiny_config):
    model = tiny_model(tiny_config)
    model.eval()
    cache = model.history_cache
    with torch.no_grad():
        first = model(_batch(model, "speech2text_token_history"))["loss"]
        assert (cache.hits, cache.misses) == (0, 3)  # three distinct turns, each encoded once
        again = model(_batch(model, "speech2text_token_history"))["loss"]
        assert (cache.hits, cache.misses) == (3, 3)
        cache.clear()
        cold = model(_batch(model, "speech2text_token_history"))["loss"]
    torch.testing.assert_close(again, first, rtol=0, atol=0)  # cached embeds are the ones computed
    torch.testing.assert_close(cold, first, rtol=0, atol=0)
    model.train()
    loss = model(_batch(model, "speech2text_token_history"))["loss"]
    loss.backward()  # training goes through the encoder (gradients), not the cache
    assert cache.hits == 3 and model.encoder.parameters().__next__().grad is not None
    copied = copy.deepcopy(model)  # a copy starts with an empty cache of its own
    assert copied.history_cache is not cache and copied.history_cache.misses == 0
