"""Build the model from a config; load a checkpoint into it without a throw-away copy.

`build_model` initialises every weight (random, or the LLM's own weights when
llm_path holds them): the start of training from scratch.

`load_model` is the lean path for everything that starts from a checkpoint
(inference, fine-tuning, compute_loss). The module tree is built with its
parameters on the meta device (buffers such as the rotary inv_freq stay real,
they are not in checkpoints), the checkpoint is memory-mapped, and its tensors
become the parameters (`load_state_dict(assign=True)`): no copy at all when
dtype and device already match, one copy in the target dtype otherwise. Only
what the checkpoint lacks and can be initialised exactly (fresh LoRA adapters)
is materialised. The full-size model (3.46B parameters) thus never holds a
float32 copy it would overwrite; bench/bench_fullsize.py measures the peak.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch

from osum_echat.models.checkpoint import (CheckpointError, KeyReport, load_checkpoint, read_state_dict,
                                          to_model_names)
from osum_echat.models.osum_echat import OsumEChat
from osum_echat.models.whisper_encoder import build_whisper_encoder
from osum_echat.utils import get_logger

logger = get_logger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]  # upstream's list


def parse_dtype(name) -> torch.dtype:
    """torch dtype from "float32" / "bf16" / torch.bfloat16 ..."""
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r}: expected one of {', '.join(DTYPES)}")
    return DTYPES[name]


def add_dtype_arg(ap, default: str = "float32", help_extra: str = "") -> None:
    """The `--dtype` flag every CLI that builds a model has."""
    ap.add_argument("--dtype", default=default, choices=["float32", "bfloat16", "float16"],
                    help="dtype the model is built and loaded in" + help_extra)


def lora_config(config: dict) -> Optional[dict]:
    if not config.get("use_lora", False):
        return None
    return dict(r=config.get("lora_rank", 8), lora_alpha=config.get("lora_alpha", 32),
                lora_dropout=config.get("lora_dropout", 0.1), target_modules=list(LORA_TARGETS))


def _has_weights(path) -> bool:
    return any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))


def build_llm(llm_path: str, device="cpu", dtype: Optional[torch.dtype] = None, weights: bool = True):
    """Qwen2ForCausalLM from `llm_path`: its weights when the folder has them
    (weights=True and device real), else random init from config.json as upstream."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from osum_echat.config import check_llm_path

    path = check_llm_path(llm_path, need_tokenizer=False)
    dtype = dtype or torch.float32
    if weights and str(device) != "meta" and _has_weights(path):
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device)
    config = AutoConfig.from_pretrained(str(path))
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def build_model(config: dict, device="cpu", tokenizer=None, llm_dtype: Optional[torch.dtype] = None,
                llm_weights: bool = True) -> OsumEChat:
    """The model from an upstream-schema config dict. device "meta" builds
    shapes only (no tokenizer, no memory)."""
    if config.get("encoder", "transformer") != "transformer":
        raise ValueError(f"encoder: {config.get('encoder')!r} is not supported; use 'transformer'")
    enc_conf = config["encoder_conf"]
    llm = build_llm(config["llm_path"], device, llm_dtype, weights=llm_weights)
    with torch.device(device):
        encoder = build_whisper_encoder(config.get("input_dim", 80), enc_conf)
        model = OsumEChat(encoder, llm, encoder_dim=enc_conf["output_size"],
                          speech_token_num=config.get("speech_token_num", 0),
                          downsample_rate=config.get("downsample_rate", 1),
                          adapter_type=config.get("adapter_type", "osum_echat"), lora=lora_config(config))
    if config.get("llm_gradient_checkpointing", False):
        model.enable_llm_gradient_checkpointing()
    if str(device) != "meta":
        if tokenizer is None:
            from osum_echat.tokenizer import load_tokenizer
            tokenizer = load_tokenizer(config["llm_path"])
        model.set_tokenizer(tokenizer)
    return model


def _is_lora(name: str) -> bool:
    return ".lora_" in name


def _placer(device: torch.device, dtype: torch.dtype):
    """Moves/casts checkpoint tensors; tensors sharing storage (the tied
    embedding under four names) become one tensor, not four copies."""
    done = {}

    def place(t: torch.Tensor) -> torch.Tensor:
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if key not in done:
            out = t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t
            done[key] = out.to(device)
        return done[key]
    return place


def _materialize_lora(model: torch.nn.Module, device, dtype) -> int:
    """Fresh adapters (A random, B zero, PEFT's own init) where the checkpoint had none."""
    from peft.tuners.lora import LoraLayer
    n = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        if not any(p.is_meta for p in list(module.lora_A.parameters()) + list(module.lora_B.parameters())):
            continue
        module.lora_A.to_empty(device=device)
        module.lora_B.to_empty(device=device)
        for adapter in module.lora_A:
            module.reset_lora_parameters(adapter, True)
        module.lora_A.to(dtype)
        module.lora_B.to(dtype)
        n += 1
    return n


def load_model(config: dict, checkpoint: str | os.PathLike, device="cpu", dtype=torch.float32,
               tokenizer=None, strict: bool = True) -> Tuple[OsumEChat, KeyReport]:
    """The model with `checkpoint`'s weights, built and loaded without a
    float32 copy it would overwrite (see the module docstring).

    strict: every entry must match (else CheckpointError naming them). With
    strict=False a checkpoint that lacks LoRA adapters gets fresh ones; one
    that lacks base weights (e.g. an encoder-only init) falls back to the full
    build (random init / llm_path weights) and a copying load.
    """
    from accelerate import init_empty_weights

    device, dtype = torch.device(device), parse_dtype(dtype)
    with init_empty_weights(include_buffers=False):
        model = build_model(config, "cpu", tokenizer, llm_dtype=dtype, llm_weights=False)
    state = read_state_dict(checkpoint)  # memory-mapped where the file allows
    renamed, report = to_model_names(model, state)
    if strict and not report.ok:
        raise CheckpointError(f"{checkpoint} does not fit the model:\n{report.summary()}")
    if any(not _is_lora(n) for n in report.missing):
        logger.warning("%s does not cover the model (%s); building it in full and copying",
                       checkpoint, report.summary())
        del state, renamed, model
        model = build_model(config, device, tokenizer, llm_dtype=dtype)
        model.to(device=device, dtype=dtype)
        return model, load_checkpoint(model, checkpoint)
    place = _placer(device, dtype)
    model.load_state_dict({k: place(v) for k, v in renamed.items()}, strict=False, assign=True)
    del state, renamed
    model.base_llm().tie_weights()
    fresh = _materialize_lora(model, device, dtype)
    # buffers that are not in checkpoints (rotary inv_freq) follow as in model.to(device, dtype)
    model.to(device=device, dtype=dtype)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{checkpoint}: {len(left)} entries stayed unloaded ({', '.join(left[:5])} ...)")
    logger.info("loaded %s into a %s model on %s%s", checkpoint, str(dtype).replace("torch.", ""), device,
                f" ({fresh} fresh LoRA adapters)" if fresh else "")
    return model, report


def load_for_inference(config: dict, checkpoint: str | os.PathLike, device="cpu", dtype=torch.float32,
                       tokenizer=None) -> OsumEChat:
    """The model for decoding: `checkpoint` loaded strictly (every key must
    match), on `device` in `dtype`, in eval mode, without gradients."""
    model, _ = load_model(config, checkpoint, device=device, dtype=dtype, tokenizer=tokenizer, strict=True)
    model.requires_grad_(False)
    return model.eval()
