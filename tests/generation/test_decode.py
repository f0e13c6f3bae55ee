import json

import numpy as np
import pytest
import soundfile as sf
import torch

from osum_echat.config import load_config
from osum_echat.data.dataset import build_dataset
from osum_echat.generation.decode import Decoder, DecodeConfig, select_item, split_think
from osum_echat.data.dataset import one_by_one_config
from osum_echat.models import build_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("decode")
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    sf.write(root / "a.wav", (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(16000)).astype("float32"), 16000)
    rows = [
        {"key": "asr", "wav": "a.wav", "txt": "hello world", "task": "<TRANSCRIBE>"},
        {"key": "s2s", "wav": "a.wav", "txt": "i am fine", "task": "<S2TCHAT> <TEXT2TOKEN>",
         "extra": {"speech_token": [5, 6, 7, 8]}},
        {"key": "tts", "wav": "a.wav", "txt": "good morning", "task": "<TEXT2TOKEN>",
         "extra": {"speech_token": [9, 10, 11]}},
    ]
    (root / "data.list").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = one_by_one_config(load_config("conf/tiny_ct_config.yaml"))
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer=tiny_tokenizer).eval()
    batches = {b.keys[0]: b for b in build_dataset(cfg, "raw", str(root / "data.list"), tiny_tokenizer,
                                                    root=str(root), mode="infer")}
    return model, batches


def uncached_greedy(model, item, steps, speech_output):
    """Reference: recompute the whole sequence every step, no KV cache."""
    x = model.assemble(item, with_output=False)
    embeds, mask, pos = x.inputs_embeds, x.attention_mask.long(), x.position_ids
    produced = []
    for _ in range(steps):
        h = model.base_llm().model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).last_hidden_state[:, -1]
        logits = model.lm_head(h)
        if speech_output:
            logits = torch.cat([logits, model.speech_head(h)], -1)
        logits[..., len(model.tokenizer):model.llm_vocab_size] = float("-inf")
        nxt = int(logits[0].argmax())
        produced.append(nxt)
        embeds = torch.cat([embeds, model.embed_ids(torch.tensor([[nxt]]))], 1)
        mask = torch.cat([mask, mask.new_ones(1, 1)], 1)
        pos = torch.cat([pos, pos[:, -1:] + 1], 1)
    return produced


@torch.no_grad()
@pytest.mark.parametrize("key,speech", [("asr", False), ("s2s", True)])
def test_cached_decoding_equals_full_recompute(setup, key, speech):
    model, batches = setup
    decoder = Decoder(model, DecodeConfig(max_text_tokens=6, max_speech_tokens=6 if speech else 0))
    hyp = decoder.decode(batches[key])[0]
    # random weights may hit the stop id early; compare what was produced
    ref = uncached_greedy(model, select_item(batches[key], 0), len(hyp.raw_ids), speech)
    assert hyp.raw_ids == ref


@torch.no_grad()
def test_speech_only_task_starts_with_the_speech_marker_and_yields_codes(setup):
    model, batches = setup
    hyp = Decoder(model, DecodeConfig(max_speech_tokens=5)).decode(batches["tts"])[0]
    marker = model.llm_vocab_size + model.speech_token_num - 1
    assert hyp.raw_ids[0] == marker and all(i >= model.llm_vocab_size for i in hyp.raw_ids)
    assert hyp.text == "" and all(0 <= c < model.speech_token_num - 1 for c in hyp.speech_tokens)


def test_overfit_model_decodes_its_training_target(setup, tiny_tokenizer):
    """Train on one utterance until it is memorised; greedy decoding must give the target back."""
    _, batches = setup
    cfg = one_by_one_config(load_config("conf/tiny_ct_config.yaml"))
    torch.manual_seed(1)
    model = build_model(cfg, tokenizer=tiny_tokenizer)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = batches["s2s"]
    for _ in range(150):
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            break
    model.eval()
    hyp = Decoder(model, DecodeConfig(max_text_tokens=20, max_speech_tokens=20)).decode(batch)[0]
    assert hyp.text == "i am fine"
    assert hyp.speech_tokens == [5, 6, 7, 8]


def test_split_think():
    assert split_think("<think>user is sad<think end>I am here.") == ("user is sad", "I am here.")
    assert split_think("plain answer") == ("", "plain answer")
