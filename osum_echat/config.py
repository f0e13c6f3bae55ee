"""Load and validate OSUM-EChat YAML configs.

Configs use upstream's `conf/ct_config.yaml` schema unchanged, so an upstream config loads as is.
Every top-level key is checked against `TOP_LEVEL` (name -> expected type); a few nested keys whose
type matters are checked against `NESTED`. Mistakes raise `ConfigError` naming the file, the key and
what is expected, before any model or dataset is built.

    cfg = load_config("conf/tiny_ct_config.yaml", ["dataset_conf.batch_conf.batch_size=4"])
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Iterable

import yaml


class ConfigError(ValueError):
    """A config file, key or referenced file is wrong; the message says which and what to do."""


NUM = (int, float)
# Upstream ct_config.yaml keys, plus the few this project adds (marked "added").
TOP_LEVEL: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "llm_path": (str,),
    "downsample_rate": (int,),
    "adapter_type": (str,),
    "if_instruct": (bool,),
    "input_dim": (int,),
    "tokenizer": (str,),
    "tokenizer_conf": (dict,),
    "use_lora": (bool,),
    "lora_alpha": NUM,
    "lora_rank": (int,),
    "lora_dropout": NUM,
    "speech_token_num": (int,),
    "fire_module": (str,),
    "grad_clip": NUM,
    "accum_grad": (int,),
    "log_interval": (int,),
    "save_interval": (int,),
    "max_epoch": (int,),
    "init_step": (bool, int),
    "optim": (str,),
    "optim_conf": (dict,),
    "scheduler": (str,),
    "scheduler_conf": (dict,),
    "dataset": (str,),
    "dataset_conf": (dict,),
    "encoder": (str,),
    "encoder_conf": (dict,),
    "data_for_showing": (dict, list, str, type(None)),
    # added by this project
    "seed": (int,),  # added: base seed of every random generator
    "device": (str,),  # added: cuda | npu | cpu; empty = detect
    "think_mode": (str,),  # added: "tag" or "language" chain-of-thought wrapping
    "max_steps": (int,),  # added: stop after this many optimizer steps (demo, smoke runs)
    "keep_checkpoint_max": (int,),  # added: newest N step checkpoints kept
    "train_conf": (dict,),  # added: trainer options not in upstream's schema
    "llm_gradient_checkpointing": (bool,),  # added: recompute LLM layers in backward
}

NESTED: dict[str, tuple[type, ...]] = {
    "dataset_conf.batch_conf.batch_size": (int,),
    "dataset_conf.batch_conf.batch_type": (str,),
    "dataset_conf.batch_conf.max_frames_in_batch": (int,),
    "dataset_conf.batch_conf.max_seq_in_batch": (int,),
    "dataset_conf.speech_token_num": (int,),
    "dataset_conf.prompt_conf_path": (str,),
    "dataset_conf.shuffle": (bool,),
    "dataset_conf.sort": (bool,),
    "optim_conf.lr": NUM,
    "optim_conf.weight_decay": NUM,
    "optim_conf.eps": NUM,
    "scheduler_conf.warmup_steps": NUM,
    "encoder_conf.output_size": (int,),
    "encoder_conf.attention_heads": (int,),
    "encoder_conf.linear_units": (int,),
    "encoder_conf.num_blocks": (int,),
    "encoder_conf.gradient_checkpointing": (bool,),
}

CHOICES: dict[str, tuple[str, ...]] = {
    "fire_module": ("link", "encoder", "llm", "link_and_encoder", "link_and_encoder_and_lora",
                    "link_and_lora"),
    "adapter_type": ("osum_echat", "osum_echat2"),
    "think_mode": ("tag", "language"),
}


def load_config(path: str | os.PathLike, overrides: Iterable[str] | None = None) -> dict[str, Any]:
    """Read a YAML config, apply `key.sub=value` overrides, validate, and return a plain dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(cfg).__name__}")
    for item in overrides or []:
        apply_override(cfg, item, source=str(path))
    validate(cfg, source=str(path))
    return cfg


def apply_override(cfg: dict, item: str, source: str = "command line") -> None:
    """Set `a.b.c=value` in cfg; the value is parsed as YAML (numbers, bools, lists)."""
    if "=" not in item:
        raise ConfigError(f"{source}: override '{item}' must look like key.sub=value")
    dotted, raw = item.split("=", 1)
    keys = dotted.strip().split(".")
    if keys[0] not in TOP_LEVEL:
        raise ConfigError(f"{source}: override names unknown key '{keys[0]}'{_suggest(keys[0], TOP_LEVEL)}")
    node = cfg
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: override '{dotted}': '{k}' is not a mapping")
    node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else ""


def validate(cfg: dict, source: str) -> None:
    for key, value in cfg.items():
        if key not in TOP_LEVEL:
            raise ConfigError(f"{source}: unknown key '{key}'{_suggest(key, TOP_LEVEL)}; "
                              f"known keys are upstream's ct_config.yaml keys (see osum_echat/config.py)")
        cfg[key] = _check_type(source, key, value, TOP_LEVEL[key])
    for dotted, types in NESTED.items():
        parent, found, value = _lookup(cfg, dotted)
        if found:
            parent[dotted.rsplit(".", 1)[1]] = _check_type(source, dotted, value, types)
    for key, choices in CHOICES.items():
        if key in cfg and cfg[key] not in choices:
            raise ConfigError(f"{source}: key '{key}' is '{cfg[key]}', expected one of {', '.join(choices)}")


def _check_type(source: str, key: str, value: Any, types: tuple[type, ...]) -> Any:
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"{source}: key '{key}' is {value!r}, expected {_names(types)}")
    if isinstance(value, types):
        return value
    # PyYAML reads "1e-6" (no dot) as a string: accept numeric strings where a number is expected.
    if isinstance(value, str) and float in types:
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{source}: key '{key}' is {value!r} ({type(value).__name__}), expected {_names(types)}")


def _lookup(cfg: dict, dotted: str):
    node: Any = cfg
    keys = dotted.split(".")
    for k in keys[:-1]:
        if not isinstance(node, dict) or k not in node:
            return None, False, None
        node = node[k]
    if isinstance(node, dict) and keys[-1] in node:
        return node, True, node[keys[-1]]
    return None, False, None


def _names(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false",
             dict: "a mapping", list: "a list", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def resolve_path(path: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """A relative path is tried against the working directory first (upstream runs from the repo
    root), then against `base` (usually the config file's folder)."""
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute() or p.exists() or base is None:
        return p
    candidate = Path(base) / p
    return candidate if candidate.exists() else p


TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("tokenizer.model",))


def check_llm_path(llm_path: str, need_tokenizer: bool = True, base: str | None = None) -> Path:
    """Return the local LLM directory, or raise ConfigError saying what is missing and how to get it.

    A Hugging Face id (e.g. "Qwen/Qwen2.5-3B-Instruct", upstream's default) is accepted when it is a
    local folder or already in the Hugging Face cache; nothing is downloaded.
    """
    path = resolve_path(llm_path, base)
    if not path.is_dir():
        cached = _hf_cache_dir(str(llm_path))
        if cached is None:
            raise ConfigError(
                f"llm_path '{llm_path}': no such local directory and not in the Hugging Face cache; "
                f"download it (huggingface-cli download {llm_path} --local-dir DIR) and set llm_path to DIR")
        path = cached
    if not (path / "config.json").is_file():
        raise ConfigError(f"llm_path '{path}': config.json is missing; it must hold a Hugging Face Qwen2 model")
    if need_tokenizer and not any(all((path / f).is_file() for f in group) for group in TOKENIZER_FILES):
        raise ConfigError(
            f"llm_path '{path}': no tokenizer files (tokenizer.json, or vocab.json + merges.txt); "
            f"download the full model into it (see conf/qwen2.5-3b-instruct/README.md)")
    return path


def _hf_cache_dir(repo_id: str) -> Path | None:
    if repo_id.count("/") != 1:
        return None
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        return None


def check_files(cfg: dict, need_tokenizer: bool = True, base: str | None = None) -> None:
    """Check the files a config names (LLM folder, prompt file) before any heavy work starts."""
    check_llm_path(cfg["llm_path"], need_tokenizer=need_tokenizer, base=base)
    prompt = cfg.get("dataset_conf", {}).get("prompt_conf_path")
    if prompt and not resolve_path(prompt, base).is_file():
        raise ConfigError(f"dataset_conf.prompt_conf_path '{prompt}': file not found "
                          f"(relative paths are taken from the working directory, then the config's folder)")
