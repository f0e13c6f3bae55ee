"""Run the data pipeline over a list and report what comes out, one JSON line per sample.

    python -m osum_echat.bin.inspect_data --config conf/tiny_ct_config.yaml \
        --data_type shard --data data/shards.list [--root DIR] [--override k=v ...]

Batch size 1, no augmentation, no shuffling, no sorting, no task conversions.
Each sample that comes out prints {"key", "task", "output_type", "num_frames",
"num_label_tokens", "num_speech_tokens"}; the last line is
{"samples": N, "skipped": {"<reason>": count, ...}}. Skipped samples are
reported, not fatal: the exit code is 0 unless the config or list is unusable.
"""
from __future__ import annotations

import argparse
import json
import sys

from osum_echat.config import ConfigError, load_config
from osum_echat.data.dataset import one_by_one_config
from osum_echat.utils import fail


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Inspect what the data pipeline makes of a data list.")
    p.add_argument("--config", required=True)
    p.add_argument("--data_type", required=True, choices=["raw", "shard", "combine"])
    p.add_argument("--data", required=True, help="list file (a combines_list.txt is read as combine)")
    p.add_argument("--root", default=None, help="folder relative paths in the lists resolve against")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    try:
        cfg = one_by_one_config(load_config(args.config, args.override))
        from osum_echat.data.dataset import build_dataset
        from osum_echat.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(cfg["llm_path"])
        dataset = build_dataset(cfg, args.data_type, args.data, tokenizer, root=args.root, mode="eval")
    except ConfigError as e:
        fail(str(e))
    count = 0
    for batch in dataset:
        count += 1
        print(json.dumps({
            "key": batch.keys[0], "task": batch.task[0], "output_type": batch.output_type,
            "num_frames": int(batch.feats_lengths[0]), "num_label_tokens": int(batch.target_lengths[0]),
            "num_speech_tokens": int(batch.speech_tokens_length[0]),
        }, ensure_ascii=False), flush=True)
    print(json.dumps({"samples": count, "skipped": dataset.skip_counts()}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
