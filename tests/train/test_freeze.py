"""fire_module decides requires_grad exactly as upstream's init_llmasr."""
import os
import sys

import pytest

from osum_echat.train.freeze import FIRE_MODULES, apply_fire_module

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
from osum_model_helpers import tiny_model  # noqa: E402

TOP = ["encoder", "ln_speech", "speech_transformer", "llama_model", "down_sample_2",
       "speech_llama_proj", "speech_token_emded", "speech_head"]

# which top-level modules keep training, written from upstream's rules
EXPECT = {
    "link": {"ln_speech", "speech_transformer", "down_sample_2", "speech_llama_proj",
             "speech_token_emded", "speech_head"},
    "encoder": {"encoder"},
    "llm": {"llama_model"},
    "link_and_encoder": set(TOP) - {"llama_model"},
    "link_and_encoder_and_lora": set(TOP),
    "link_and_lora": set(TOP) - {"encoder"},
}


def _trainable_tops(model):
    state = {}
    for name, p in model.named_parameters():
        state.setdefault(name.split(".")[0], set()).add(p.requires_grad)
    for top, flags in state.items():
        assert len(flags) == 1, f"{top} is partly frozen"
    return {top for top, flags in state.items() if flags == {True}}


@pytest.mark.parametrize("fire_module", FIRE_MODULES)
def test_fire_module_without_lora(tiny_config, fire_module):
    model = tiny_model(tiny_config)
    counts = apply_fire_module(model, fire_module)
    assert _trainable_tops(model) == EXPECT[fire_module]
    assert counts["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    # the tied embedding is judged by its LLM name
    assert model.embed_tokens.weight.requires_grad == ("llama_model" in EXPECT[fire_module])


@pytest.mark.parametrize("fire_module", ["llm", "link_and_lora", "link_and_encoder_and_lora", "link_and_encoder"])
def test_fire_module_with_lora_trains_only_lora_in_the_llm(tiny_config, fire_module):
    model = tiny_model(tiny_config, use_lora=True, lora_rank=4)
    apply_fire_module(model, fire_module)
    llm = {n: p.requires_grad for n, p in model.named_parameters() if n.startswith("llama_model")}
    lora_on = fire_module != "link_and_encoder"
    assert all(flag == (lora_on and "lora_" in n) for n, flag in llm.items())
    others = {n.split(".")[0] for n, p in model.named_parameters()
              if p.requires_grad and not n.startswith("llama_model")}
    assert others == EXPECT[fire_module] - {"llama_model"}


def test_unknown_fire_module_is_an_error(tiny_config):
    with pytest.raises(ValueError, match="fire_module 'everything'"):
        apply_fire_module(tiny_model(tiny_config), "everything")
