"""`fire_module`: which parts of the model train (upstream init_llmasr rules).

Upstream only ever switches requires_grad off, by parameter-name prefix,
walking named_parameters() (so the tied embedding is judged by its first
name, llama_model.model.embed_tokens). With use_lora, PEFT has already frozen
the base LLM, so "llm" / "*_and_lora" then train the LoRA weights only;
without LoRA, "link_and_encoder_and_lora" trains everything (the released
config does exactly that).
"""
from __future__ import annotations

from torch import nn

# fire_module -> predicate(name) saying the parameter is frozen
_FROZEN = {
    "link": lambda name: name.startswith(("llama_model", "encoder")),
    "encoder": lambda name: not name.startswith("encoder"),
    "llm": lambda name: not name.startswith("llama_model"),
    "link_and_encoder": lambda name: name.startswith("llama_model"),
    "link_and_encoder_and_lora": lambda name: False,
    "link_and_lora": lambda name: name.startswith("encoder"),
}

FIRE_MODULES = tuple(_FROZEN)


def apply_fire_module(model: nn.Module, fire_module: str) -> dict:
    """Freeze parameters per `fire_module`; returns {"trainable": n, "frozen": n} counts."""
    if fire_module not in _FROZEN:
        raise ValueError(f"fire_module {fire_module!r}: expected one of {', '.join(FIRE_MODULES)} "
                         "(set it in the config; without it nothing would train)")
    frozen = _FROZEN[fire_module]
    counts = {"trainable": 0, "frozen": 0}
    for name, p in model.named_parameters():
        if frozen(name):
            p.requires_grad = False
        counts["trainable" if p.requires_grad else "frozen"] += p.numel()
    return counts
