"""Load and validate OSUM-EChat YAML configs.

Configs use upstream's `conf/ct_config.yaml` schema unchanged, so an upstream config loads as is.
Every key at every depth is checked against `config_schema.SCHEMA` (name -> expected type, or the
schema of a nested mapping): a mistyped key anywhere is a `ConfigError` naming the file, the full key
path and the closest known key; keys and values upstream has but this project does not implement are
refused with the reason. All of it before any model or dataset is built.

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


from .config_schema import ANY, CHOICES, NOT_SUPPORTED, SCHEMA, UNSUPPORTED_VALUES, known_paths

TOP_LEVEL = SCHEMA  # top-level keys (name -> expected type, or the schema of a mapping)


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
    """Every key, at every depth, against config_schema.SCHEMA; then the choices and unsupported values."""
    _validate_mapping(cfg, SCHEMA, "", source)
    for dotted, choices in CHOICES.items():
        _, found, value = _lookup(cfg, dotted)
        if found and value not in choices:
            raise ConfigError(f"{source}: key '{dotted}' is {value!r}, expected one of {', '.join(choices)}")
    for dotted, (bad, why) in UNSUPPORTED_VALUES.items():
        _, found, value = _lookup(cfg, dotted)
        if found and value == bad:
            raise ConfigError(f"{source}: key '{dotted}: {value!r}' is {why}")


def _validate_mapping(node: dict, schema: dict, prefix: str, source: str) -> None:
    for key, value in node.items():
        path = f"{prefix}{key}"
        if path in NOT_SUPPORTED:
            raise ConfigError(f"{source}: key '{path}': {NOT_SUPPORTED[path]}")
        if key not in schema:
            raise ConfigError(f"{source}: unknown key '{path}'{_suggest_path(path, schema, prefix)}; "
                              f"the known keys are upstream's ct_config.yaml schema (osum_echat/config_schema.py)")
        sub = schema[key]
        if isinstance(sub, dict):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: key '{path}' is {value!r} ({type(value).__name__}), expected a mapping")
            _validate_mapping(value, sub, path + ".", source)
        elif sub is not ANY:
            node[key] = _check_type(source, path, value, sub)


def _suggest_path(path: str, schema: dict, prefix: str) -> str:
    """The closest key beside it, else the known key path ending most like it (a key in the wrong mapping)."""
    leaf = path.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, list(schema), n=1)
    if close:
        return f" (did you mean '{prefix}{close[0]}'?)"
    paths = known_paths()
    close = difflib.get_close_matches(leaf, [p.rsplit(".", 1)[-1] for p in paths], n=1, cutoff=0.8)
    if close:
        where = next(p for p in paths if p.rsplit(".", 1)[-1] == close[0])
        return f" (did you mean '{where}'?)"
    return ""


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
        cached = _hf_cache_dir(str(llm_path)) if _looks_like_hub_id(str(llm_path)) else None
        if cached is None:
            raise ConfigError(f"llm_path '{llm_path}': {_missing_llm_hint(str(llm_path), base)}")
        path = cached
    if not (path / "config.json").is_file():
        raise ConfigError(f"llm_path '{path}': config.json is missing; it must hold a Hugging Face Qwen2 model")
    if need_tokenizer and not any(all((path / f).is_file() for f in group) for group in TOKENIZER_FILES):
        raise ConfigError(
            f"llm_path '{path}': no tokenizer files (tokenizer.json, or vocab.json + merges.txt); write the "
            f"Qwen2.5 tokenizer into it offline: python -m osum_echat.tools.qwen_tokenizer --out {path} "
            f"(see conf/qwen2.5-3b-instruct/README.md)")
    return path


def _looks_like_hub_id(name: str) -> bool:
    """"Qwen/Qwen2.5-3B-Instruct": one slash, no leading ./ ~ /, and no local folder named like its owner."""
    if name.count("/") != 1 or name.startswith((".", "/", "~")) or name.endswith("/"):
        return False
    return not Path(name.split("/", 1)[0]).is_dir()


def _missing_llm_hint(name: str, base: str | None) -> str:
    if _looks_like_hub_id(name):
        return (f"no such local directory and not in the Hugging Face cache; download it "
                f"(huggingface-cli download {name} --local-dir DIR) and set llm_path to DIR")
    where = "" if os.path.isabs(os.path.expanduser(name)) else \
        " (relative paths are taken from the working directory" + (f", then {base})" if base else ")")
    return (f"no such local directory{where}; set llm_path to the folder that holds the Qwen2 model's "
            f"config.json and tokenizer (conf/qwen2.5-3b-instruct for the full size, after tools/install.sh), "
            f"or create that folder")


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


SAVED_CONFIG = "train.yaml"  # what training writes beside its checkpoints


def resolve_config(config: str | os.PathLike | None, checkpoint: str | os.PathLike | None) -> str:
    """The YAML to build a checkpoint's model with: `config` when given, else the train.yaml that
    training saved beside `checkpoint` (or beside the file a symlinked checkpoint points to, as the
    demo's tag_think_final.pt -> stage3_tag_think/final.pt). Raises ConfigError (one line naming both
    files) otherwise."""
    if config:
        if not Path(config).is_file():
            raise ConfigError(f"config {config} not found" + (f" (for checkpoint {checkpoint}); drop --config to "
                                                              f"use the {SAVED_CONFIG} beside the checkpoint"
                                                              if checkpoint else ""))
        return str(config)
    if not checkpoint:
        raise ConfigError("give --checkpoint (the config defaults to the train.yaml saved beside it) or --config")
    saved = saved_config(checkpoint)
    if saved is None:
        raise ConfigError(f"no --config given and no {Path(checkpoint).parent / SAVED_CONFIG} beside checkpoint "
                          f"{checkpoint} (training saves it there); pass --config with the config the checkpoint "
                          f"was trained with")
    return str(saved)


def saved_config(checkpoint: str | os.PathLike) -> Path | None:
    """train.yaml beside the checkpoint, else beside the file it links to; None when neither exists."""
    for folder in (Path(checkpoint).parent, Path(checkpoint).resolve().parent):
        if (folder / SAVED_CONFIG).is_file():
            return folder / SAVED_CONFIG
    return None


def mismatch_message(config: str | os.PathLike, checkpoint: str | os.PathLike, error: Exception) -> str:
    """One line for a checkpoint that does not fit the model a config builds: both files and the fix."""
    lines = str(error).splitlines()
    first = lines[1].strip() if len(lines) > 1 else lines[0] if lines else type(error).__name__
    beside = saved_config(checkpoint)
    fix = (f"use the config it was trained with: drop --config to use {beside}"
           if beside is not None and Path(config).resolve() != beside.resolve()
           else "pass --config with the config it was trained with")
    return f"checkpoint {checkpoint} does not fit config {config} ({first}); {fix}"
