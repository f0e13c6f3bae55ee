"""Per-utterance loss of a checkpoint on a data list (the fidelity tool).

  python -m osum_echat.bin.compute_loss --checkpoint CKPT.pt [--config conf/ct_config.yaml] \
      --data_type shard --data data/shards.list [--root DIR] --output losses.jsonl

Batch size 1, no augmentation, no shuffling, no random task conversion, no
length filtering; the model in eval mode, on CPU, float32 unless --dtype says otherwise. One JSON line per
utterance, in input order:
  {"key", "task", "output_type", "loss", "num_target_tokens"}
num_target_tokens counts the positions in the loss. With
expand_dialogue_prefix, every prefix of a dialogue is written under the
dialogue's own key (turn 1 first, the whole dialogue last), as upstream's
pipeline names them. An utterance the model
cannot take (e.g. too few speech tokens for streaming) is skipped, counted
and named on stderr.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter

import torch

from osum_echat.config import ConfigError, load_config, resolve_config
from osum_echat.data.dataset import one_by_one_config
from osum_echat.models.build import add_dtype_arg
from osum_echat.models.checkpoint import CheckpointError


_TURN_SUFFIX = re.compile(r"#turn\d+$")  # how the data pipeline names expanded prefixes


def upstream_key(key: str) -> str:
    return _TURN_SUFFIX.sub("", key)


def utterance_losses(model, dataset, skipped: Counter):
    for batch in dataset:
        try:
            with torch.no_grad():
                out = model(batch)
        except ValueError as e:  # a sample the assembly rejects, with its key in the message
            skipped["model_rejected"] += 1
            print(f"skipped {batch.keys[0]}: {e}", file=sys.stderr)
            continue
        yield {"key": upstream_key(batch.keys[0]), "task": batch.task[0], "output_type": out["output_type"],
               "loss": float(out["loss"]), "num_target_tokens": int(out["num_tokens"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="model config (default: train.yaml beside the checkpoint)")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data_type", required=True, choices=["raw", "shard", "combine"])
    ap.add_argument("--data", required=True, help="data list file")
    ap.add_argument("--root", default=None, help="folder that relative paths in the list are read against")
    ap.add_argument("--output", required=True)
    ap.add_argument("--allow_partial", action="store_true",
                    help="go on when the checkpoint does not cover the whole model")
    add_dtype_arg(ap, help_extra=" (float32 reproduces the fidelity numbers)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        from osum_echat.data.dataset import build_dataset
        from osum_echat.models import load_model
        from osum_echat.tokenizer import load_tokenizer

        config = one_by_one_config(load_config(resolve_config(args.config, args.checkpoint)))
        tokenizer = load_tokenizer(config["llm_path"])
        model, report = load_model(config, args.checkpoint, "cpu", args.dtype, tokenizer,
                                   strict=not args.allow_partial)
        if not report.ok:
            print(f"warning: partial load of {args.checkpoint}:\n{report.summary()}", file=sys.stderr)
        model.eval()
        dataset = build_dataset(config, args.data_type, args.data, tokenizer, root=args.root, mode="infer")
    except (ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    skipped, written = Counter(), 0
    with open(args.output, "w", encoding="utf-8") as out:
        for line in utterance_losses(model, dataset, skipped):
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            written += 1
    skipped.update(dataset.skip_counts())
    print(f"wrote {written} utterances to {args.output}; skipped {dict(skipped) or 0}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
