"""Validate a config and the files it names; print one line and exit non-zero on any problem.

    python -m osum_echat.bin.check_config --config conf/ct_config.yaml [--override k=v ...] [--device cpu]
        [--data LIST ... --data_type shard [--data_root DIR]] [--checkpoint PT] [--deepspeed_config JSON]

train.sh runs it once before launching training (no DeepSpeed, no model: a few seconds).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from osum_echat.config import ConfigError, check_files, load_config
from osum_echat.utils import fail


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Validate an OSUM-EChat config and the files it names.")
    p.add_argument("--config", required=True)
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default=None, help="cuda | npu | cpu: also check that it is usable")
    p.add_argument("--no_tokenizer", action="store_true", help="only config.json is needed (meta builds)")
    p.add_argument("--data", action="append", default=[], metavar="LIST", help="data lists to check")
    p.add_argument("--data_type", default="shard", help="raw | shard | combine (for --data)")
    p.add_argument("--data_root", default=None, help="folder relative paths in the lists resolve against")
    p.add_argument("--checkpoint", default=None, help="initial weights that must exist")
    p.add_argument("--deepspeed_config", default=None, help="DeepSpeed JSON that must parse")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.override)
        check_files(cfg, need_tokenizer=not args.no_tokenizer, base=str(Path(args.config).parent))
        from osum_echat.train.prelaunch import check_launch
        check_launch(args.data, args.data_type, args.data_root, args.checkpoint, args.deepspeed_config)
        if args.device:
            from osum_echat.train.devices import DeviceError, select_device
            try:
                select_device(args.device)
            except DeviceError as e:
                fail(str(e))
    except ConfigError as e:
        fail(str(e))
    print(f"ok: {args.config}")


if __name__ == "__main__":
    main()
