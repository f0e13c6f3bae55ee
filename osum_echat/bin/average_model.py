"""Average the last N checkpoints of a training run (or the N best by loss).

  python -m osum_echat.bin.average_model --src_path exp/run --dst_model exp/run/avg5.pt --num 5
  python -m osum_echat.bin.average_model --src_path exp/run --dst_model avg.pt --num 3 --val_best

"Last" is by modification time among *.pt in src_path (init*.pt and the TAG.state.pt / TAG.rng.pt
files saved beside checkpoints excluded).
--val_best reads each checkpoint's sibling .yaml (upstream's info file) and
takes the lowest `loss_dict.loss` (or `loss`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

from osum_echat.models.checkpoint import CheckpointError, average_state_dicts, save_checkpoint


SIDE_FILES = (".state.pt", ".rng.pt")  # optimizer and RNG states saved beside a checkpoint: not weights


def _loss(info_path: Path):
    info = yaml.safe_load(info_path.read_text(encoding="utf-8")) or {}
    loss = info.get("loss_dict", {}).get("loss", info.get("loss"))
    return None if loss is None else float(loss)


def pick(src: Path, num: int, val_best: bool, exclude: Path | None = None) -> list:
    pts = [p for p in src.glob("*.pt") if not p.name.startswith("init") and not p.name.endswith(SIDE_FILES)
           and (exclude is None or p.resolve() != exclude.resolve())]
    if val_best:
        scored = [(loss, p) for p in pts if p.with_suffix(".yaml").is_file()
                  and (loss := _loss(p.with_suffix(".yaml"))) is not None]
        chosen = [p for _, p in sorted(scored, key=lambda x: x[0])[:num]]
    else:
        chosen = sorted(pts, key=lambda p: p.stat().st_mtime)[-num:]
    if len(chosen) < num:
        raise CheckpointError(f"{src}: wanted {num} checkpoints, found {len(chosen)}")
    return chosen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src_path", required=True)
    ap.add_argument("--dst_model", required=True)
    ap.add_argument("--num", type=int, default=5)
    ap.add_argument("--val_best", action="store_true")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                    help="dtype of the averaged weights (default: as stored)")
    args = ap.parse_args(argv)
    try:
        paths = pick(Path(args.src_path), args.num, args.val_best, Path(args.dst_model))
        for p in paths:
            print(f"averaging {p}")
        save_checkpoint(average_state_dicts(paths, getattr(torch, args.dtype) if args.dtype else None), args.dst_model)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst_model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
