"""Expand a data yaml into the list file a run reads (upstream's load_combine_type_yaml.py, seeded).

    python -m common_utils.load_data_yaml conf/data_example.yaml data/train.list [--seed 777]

The yaml names lists, each with a `path` and an optional `weight` (default 1):

    asr_aishell:   {path: data/aishell/shards_list.txt, weight: 2}    # every tar twice
    chat_combine:  {path: data/chat/combines_list.txt, weight: 1}
    tts_subset:    {path: data/tts/shards_list.txt, weight: 0.3}      # a random 30%

An integer weight >= 1 repeats the list that many times; a weight below 1
keeps that fraction of it, drawn at random. Shard lists become lines "-|TAR";
a combines_list.txt becomes "META|<tar_root>/<meta stem>.tar" lines, its
tar_root read from the combines_tar_root.txt next to it. The result is
shuffled with `--seed` (upstream seeds with the clock; here a run can be
reproduced) and read with data_type shard.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import yaml


def _lines(path: Path) -> list:
    return [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def expand_data_yaml(yaml_path: str, seed: int = 777) -> tuple:
    """(lines, problems): the shuffled "META|TAR" lines, and one message per list that was left out."""
    spec = yaml.safe_load(Path(yaml_path).read_text(encoding="utf-8")) or {}
    if not isinstance(spec, dict):
        raise ValueError(f"{yaml_path}: expected a mapping name -> {{path, weight}}")
    rng = random.Random(seed)
    out, problems = [], []
    for name, item in spec.items():
        if not isinstance(item, dict) or "path" not in item:
            problems.append(f"{yaml_path}: entry {name!r} has no 'path'; left out")
            continue
        path = Path(item["path"])
        if not path.is_file():
            problems.append(f"{yaml_path}: entry {name!r}: list {path} does not exist; left out")
            continue
        weight = float(item.get("weight", 1))
        lines = _lines(path)
        if weight >= 1:
            lines = lines * int(weight)
        else:
            lines = rng.sample(lines, int(len(lines) * max(weight, 0.0)))
        if path.name == "combines_list.txt":
            root_file = path.with_name("combines_tar_root.txt")
            if not root_file.is_file():
                problems.append(f"{yaml_path}: entry {name!r}: {root_file} is missing; left out")
                continue
            tar_root = _lines(root_file)[0].rstrip("/")
            out += [f"{meta}|{tar_root}/{Path(meta).stem}.tar" for meta in lines]
        else:
            out += [f"-|{tar}" for tar in lines]
    rng.shuffle(out)
    return out, problems


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Expand a data yaml (named lists with path + weight) into one list.")
    p.add_argument("data_yaml")
    p.add_argument("out_list")
    p.add_argument("--seed", type=int, default=777)
    args = p.parse_args(argv)
    lines, problems = expand_data_yaml(args.data_yaml, args.seed)
    for msg in problems:
        print(f"warning: {msg}", file=sys.stderr)
    Path(args.out_list).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_list).write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    print(f"{args.out_list}: {len(lines)} lines")


if __name__ == "__main__":
    main()
