"""Check or convert OSUM-EChat checkpoints against the model a config builds.

  # do a manifest's (or a checkpoint's) keys and shapes fit conf/ct_config.yaml?
  python -m osum_echat.bin.convert_checkpoint --config conf/ct_config.yaml \
      --check_keys conf/reference/osum_echat_checkpoint_keys.tsv

  # rewrite a checkpoint into this model's layout (LoRA or not, .pt or .safetensors)
  python -m osum_echat.bin.convert_checkpoint --config CONF --input IN.pt --output OUT.safetensors

  # encoder initialisation from an openai-whisper file (e.g. medium.pt)
  python -m osum_echat.bin.convert_checkpoint --config CONF --whisper medium.pt --output enc_init.pt

The model is built on the meta device: no weights, no tokenizer needed.
Exit status 0 only when the check passes / the conversion is complete.
"""
from __future__ import annotations

import argparse
import sys

from osum_echat.config import ConfigError, load_config
from osum_echat.models.build import DTYPES
from osum_echat.models.checkpoint import (CheckpointError, compare_keys, read_key_table,
                                          read_state_dict, save_checkpoint, to_model_names)



def model_shapes(config: dict) -> dict:
    from osum_echat.models import build_model
    model = build_model(config, device="meta")
    return model, {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check(config: dict, source: str) -> int:
    _, shapes = model_shapes(config)
    if source.endswith(".tsv"):
        theirs = read_key_table(source)
    else:
        theirs = {k: tuple(v.shape) for k, v in read_state_dict(source).items()}
    report = compare_keys(shapes, theirs)
    print(f"model: {len(shapes)} entries, {source}: {len(theirs)} entries")
    print(report.summary())
    return 0 if report.ok else 1


def convert(config: dict, src: str, dst: str, dtype: str | None) -> int:
    model, _ = model_shapes(config)
    renamed, report = to_model_names(model, read_state_dict(src))
    if dtype:
        renamed = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in renamed.items()}
    save_checkpoint(renamed, dst)
    print(f"wrote {dst}: {len(renamed)} entries")
    if not report.ok:
        print(report.summary())
    return 0 if report.ok else 1


def from_whisper(config: dict, src: str, dst: str, dtype: str | None) -> int:
    from osum_echat.models.whisper_encoder import build_whisper_encoder, load_whisper_weights
    encoder = build_whisper_encoder(config.get("input_dim", 80), config["encoder_conf"])
    load_whisper_weights(encoder, src)
    if dtype:
        encoder.to(DTYPES[dtype])
    save_checkpoint({f"encoder.{k}": v for k, v in encoder.state_dict().items()}, dst)
    print(f"wrote {dst}: encoder initialised from {src}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--check_keys", help="key manifest (.tsv: name, shape, dtype) or a checkpoint file")
    ap.add_argument("--input", help="checkpoint to convert")
    ap.add_argument("--whisper", help="openai-whisper checkpoint to turn into an encoder init")
    ap.add_argument("--output")
    ap.add_argument("--dtype", choices=sorted(DTYPES), help="cast floating entries of the output (default: as stored)")
    args = ap.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.check_keys:
            return check(config, args.check_keys)
        if not args.output:
            ap.error("--output is required with --input / --whisper")
        if args.input:
            return convert(config, args.input, args.output, args.dtype)
        if args.whisper:
            return from_whisper(config, args.whisper, args.output, args.dtype)
        ap.error("give --check_keys, --input or --whisper")
    except (ConfigError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
