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
from osum_echat.generation.decode import DecodeConfig
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
    ap.add_argument("--max_text_tokens", type=int, default=512)
    ap.add_argument("--max_speech_tokens", type=int, default=2000)
    ap.add_argument("--do_sample", action="store_true", help="sample instead of greedy decoding")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top_k", type=int, default=0)
    ap.add_argument("--top_p", type=float, default=1.0)
    ap.add_argument("--repetition_penalty", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num_workers", type=int, default=0)
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
    decode_conf = DecodeConfig(max_text_tokens=args.max_text_tokens, max_speech_tokens=args.max_speech_tokens,
                               do_sample=args.do_sample, temperature=args.temperature, top_k=args.top_k,
                               top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed)
    summary = run(model, tokenizer, config, args.data_type, args.data, args.output, root=args.root,
                  decode_conf=decode_conf, num_workers=args.num_workers)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
