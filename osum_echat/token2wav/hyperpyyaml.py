"""HyperPyYAML read without running it: `!new:pkg.Class` / `!name:pkg.fn` / `!apply:pkg.fn` / `!ref <key>`
become inert `Node`s (simple refs resolved), so a released cosyvoice.yaml is data, not code."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class Token2WavConfigError(ValueError):
    """A cosyvoice.yaml that cannot describe the CosyVoice-300M-25Hz flow/HiFT (names file and key)."""


@dataclass
class Node:
    """One `!new:` / `!name:` / `!apply:` / `!ref` entry, kept as data."""
    kind: str          # new | name | apply | ref | other tag name
    target: str        # dotted class/function path, or the ref expression
    kwargs: dict = field(default_factory=dict)
    args: list = field(default_factory=list)

    @property
    def cls(self) -> str:
        return self.target.rsplit(".", 1)[-1]


class _InertLoader(yaml.SafeLoader):
    pass


def _payload(loader, node):
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True), []
    if isinstance(node, yaml.SequenceNode):
        return {}, loader.construct_sequence(node, deep=True)
    value = loader.construct_scalar(node)
    return {}, ([] if value in ("", None) else [value])


def _multi(kind):
    def construct(loader, suffix, node):
        kwargs, args = _payload(loader, node)
        return Node(kind, suffix, kwargs, args)
    return construct


def _single(kind):
    def construct(loader, node):
        kwargs, args = _payload(loader, node)
        return Node(kind, str(args[0]) if kind == "ref" and args else "", kwargs, args)
    return construct


for _kind in ("new", "name", "apply", "module"):
    _InertLoader.add_multi_constructor(f"!{_kind}:", _multi(_kind))
for _kind in ("ref", "copy", "tuple", "include", "PLACEHOLDER"):
    _InertLoader.add_constructor(f"!{_kind}", _single(_kind))
# the released yaml writes 1e-06 (no dot), which YAML 1.1 reads as a string: accept it as a float
_InertLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)$"),
    list("-+0123456789"))

_REF = re.compile(r"^<([^<>]+)>$")


def load_hyperpyyaml_inert(path: str | Path) -> dict:
    """Parse a HyperPyYAML file into plain data + `Node`s; simple `!ref <key>` / `<a.b>` are resolved."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_InertLoader)
    except yaml.YAMLError as e:
        raise Token2WavConfigError(f"{path}: not readable as (Hyper)YAML: {e}") from e
    if not isinstance(data, dict):
        raise Token2WavConfigError(f"{path}: top level must be a mapping")
    return _resolve(data, data, path, depth=0)


def _lookup(root: dict, key: str, path: Path):
    cur: Any = root
    for part in re.split(r"[.\[\]]+", key.strip()):
        if not part:
            continue
        if isinstance(cur, Node):
            cur = cur.kwargs
        if not isinstance(cur, dict) or part not in cur:
            raise Token2WavConfigError(f"{path}: !ref <{key}> names no entry")
        cur = cur[part]
    return cur


def _resolve(obj, root, path, depth):
    if depth > 50:
        raise Token2WavConfigError(f"{path}: !ref chain too deep (a cycle?)")
    if isinstance(obj, Node):
        if obj.kind == "ref":
            m = _REF.match(obj.target.strip())
            if m is None:  # arithmetic refs are not ours to evaluate; left inert
                return obj
            return _resolve(_lookup(root, m.group(1), path), root, path, depth + 1)
        obj.kwargs = {k: _resolve(v, root, path, depth) for k, v in obj.kwargs.items()}
        obj.args = [_resolve(v, root, path, depth) for v in obj.args]
        return obj
    if isinstance(obj, dict):
        return {k: _resolve(v, root, path, depth) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, root, path, depth) for v in obj]
    return obj
