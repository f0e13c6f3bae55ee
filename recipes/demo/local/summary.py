"""Print what each demo stage learned: cv loss/accuracy before training and at the end.

Stage 1's cv list is the ASR targets of its own training speech, so its accuracy is the
teacher-forced next-token accuracy the demo promises to lift above 90%. Exits 1 if a stage
is missing or that target (or "stage 2/3 loss at most half its start") is not met.
"""
import os
import sys

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from osum_echat.train.checkpointing import latest_checkpoint  # noqa: E402

STAGES = {1: "understanding", 2: "generation", 3: "empathy"}
ASR_ACC_TARGET = 0.90
LOSS_RATIO_TARGET = 0.5


def main(exp_dir):
    ok = True
    for n, name in STAGES.items():
        stage_dir = os.path.join(exp_dir, f"stage{n}")
        start_path = os.path.join(stage_dir, "cv_start.yaml")
        last = latest_checkpoint(stage_dir) if os.path.isdir(stage_dir) else None
        if last is None or not os.path.exists(start_path):
            print(f"stage {n} ({name}): no finished run in {stage_dir}")
            ok = False
            continue
        with open(start_path) as f:
            start = yaml.safe_load(f)["loss_dict"]
        end = last["info"]["loss_dict"]
        print(f"stage {n} ({name}), {last['info']['step']} steps, cv before -> after:")
        for key in sorted(k for k in end if k.startswith("loss/")):
            kind = key.split("/", 1)[1]
            print(f"  {kind:28s} loss {start.get(key, float('nan')):7.3f} -> {end[key]:7.3f}   "
                  f"acc {start.get('acc/' + kind, float('nan')):.3f} -> {end['acc/' + kind]:.3f}")
        if n == 1:
            acc = end.get("acc", 0.0)
            met = acc > ASR_ACC_TARGET
            print(f"  ASR teacher-forced accuracy {acc:.3f} (target > {ASR_ACC_TARGET}): "
                  f"{'met' if met else 'NOT met'}")
        else:
            ratio = end["loss"] / start["loss"]
            met = ratio <= LOSS_RATIO_TARGET
            print(f"  loss ratio after/before {ratio:.3f} (target <= {LOSS_RATIO_TARGET}): "
                  f"{'met' if met else 'NOT met'}")
        ok &= met
        print(f"  model for the next stage / inference: {os.path.join(stage_dir, 'final.pt')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "exp/demo"))
