"""Turn a data yaml into one training list, as upstream's train.sh does before launching.

A data yaml names lists and how often to use them:
    asr_part1:
      path: data/asr1/shards_list.txt      # shard: a list of tars
      weight: 2                            # repeat twice (a float < 1 takes that fraction)
    chat:
      path: data/chat/combines_list.txt    # combine: its combines_tar_root.txt must sit beside it
    tts_raw:
      path: data/tts/data.list             # raw: jsonl lines are copied
Output lines: a tar path (shard), "META|TAR" (combine) or a jsonl line (raw), shuffled with a
fixed seed so that every node of a multi-node job writes the same list (upstream seeded with
the clock, so only the master could run it).

    python -m osum_echat.train.data_lists conf/data_s2t.yaml exp/x/data/s2t.list [--seed 777]
"""
from __future__ import annotations

import argparse
import os
import random
import sys

import yaml


class DataYamlError(ValueError):
    pass


def _lines(path: str) -> list[str]:
    with open(path, encoding="utf8") as f:
        return [line.strip() for line in f if line.strip()]


def _absolute(entry: str, base: str) -> str:
    if os.path.isabs(entry) or entry.startswith("{"):
        return entry
    candidate = os.path.join(base, entry)
    return os.path.abspath(candidate) if os.path.exists(candidate) else entry


def expand_item(name: str, item: dict, yaml_path: str, rng: random.Random) -> list[str]:
    if not isinstance(item, dict) or "path" not in item:
        raise DataYamlError(f"{yaml_path}: entry '{name}' needs a 'path' (and optionally 'weight')")
    path = item["path"]
    if not os.path.isabs(path) and not os.path.exists(path):
        path = os.path.join(os.path.dirname(yaml_path), path)
    if not os.path.isfile(path):
        raise DataYamlError(f"{yaml_path}: entry '{name}': list {item['path']} not found")
    base = os.path.dirname(os.path.abspath(path))
    entries = [_absolute(e, base) for e in _lines(path)]
    weight = float(item.get("weight", 1))
    if weight < 0:
        raise DataYamlError(f"{yaml_path}: entry '{name}': weight must be >= 0, got {weight}")
    if weight < 1:
        entries = rng.sample(entries, int(len(entries) * weight))
    else:
        entries = entries * int(weight)
    if os.path.basename(path) == "combines_list.txt":
        root_file = os.path.join(base, "combines_tar_root.txt")
        if not os.path.isfile(root_file):
            raise DataYamlError(f"{yaml_path}: entry '{name}': {root_file} missing (combine format "
                                "needs the folder of its tars there)")
        tar_root = _absolute(_lines(root_file)[0], base).rstrip("/")
        entries = [f"{e}|{tar_root}/{os.path.splitext(os.path.basename(e))[0]}.tar" for e in entries]
    return entries


def yaml_to_list(yaml_path: str, out_path: str, seed: int = 777) -> int:
    with open(yaml_path, encoding="utf8") as f:
        spec = yaml.safe_load(f) or {}
    if not isinstance(spec, dict):
        raise DataYamlError(f"{yaml_path}: expected a mapping name -> {{path, weight}}")
    rng = random.Random(seed)
    entries = [e for name, item in spec.items() for e in expand_item(name, item, yaml_path, rng)]
    rng.shuffle(entries)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf8") as f:
        f.writelines(e + "\n" for e in entries)
    os.replace(tmp, out_path)
    return len(entries)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_yaml")
    p.add_argument("out_list")
    p.add_argument("--seed", type=int, default=777)
    args = p.parse_args(argv)
    try:
        n = yaml_to_list(args.data_yaml, args.out_list, args.seed)
    except (DataYamlError, OSError, yaml.YAMLError) as e:
        sys.exit(f"error: {e}")
    print(f"{args.out_list}: {n} entries from {args.data_yaml}")


if __name__ == "__main__":
    main()
