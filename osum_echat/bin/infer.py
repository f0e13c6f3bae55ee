"""Decode a data list with a trained OSUM-EChat checkpoint.

  python -m osum_echat.bin.infer --config conf/ct_config.yaml --checkpoint CKPT.pt \
      --data_type raw|shard|combine --data LIST [--root DIR] --output exp/infer/text [--device cpu]

Writes OUT (`key<TAB>text`), OUT.jsonl (text, think, speech tokens per utterance) and OUT.wer
(WER/CER and tag accuracy against the list's reference texts, when it has them). The task of each
utterance comes from the list (its `task` field), as in training.
"""
from __future__ import annotations

import argparse
import sys

import torch

from osum_echat.config import ConfigError, load_config
from osum_echat.generation.options import add_decode_args, decode_options_from_args
from osum_echat.utils import fail


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--checkpoint", required=True, help="model .pt (ours or upstream's released format)")
    ap.add_argument("--data_type", required=True, choices=["raw", "shard", "combine"])
    ap.add_argument("--data", required=True, help="data list file")
    ap.add_argument("--root", default=None, help="folder that relative paths in the list are read against")
    ap.add_argument("--output", required=True, help="result file (key<TAB>text)")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", default=None, help="cuda | npu | cpu (default: detect)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--num_workers", type=int, default=0)
    add_decode_args(ap)
    args = ap.parse_args(argv)

    from osum_echat.infer.batch import run
    from osum_echat.models import load_for_inference
    from osum_echat.models.checkpoint import CheckpointError
    from osum_echat.tokenizer import load_tokenizer
    from osum_echat.train.devices import DeviceError, select_device

    try:
        device = select_device(args.device)
        config = load_config(args.config, args.override)
        tokenizer = load_tokenizer(config["llm_path"])
        model = load_for_inference(config, args.checkpoint, device, getattr(torch, args.dtype), tokenizer)
    except (ConfigError, CheckpointError, DeviceError) as e:
        fail(str(e))
    summary = run(model, tokenizer, config, args.data_type, args.data, args.output, root=args.root,
                  decode_options=decode_options_from_args(args), num_workers=args.num_workers)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
