"""Validate a config and the files it names; print one line and exit non-zero on any problem.

    python -m osum_echat.bin.check_config --config conf/ct_config.yaml [--override k=v ...] [--device cpu]
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
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.override)
        check_files(cfg, need_tokenizer=not args.no_tokenizer, base=str(Path(args.config).parent))
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
