"""DeepSpeed ZeRO-2, two CPU processes over gloo, LoRA on the tiny LLM: train, save, convert, load.

The first DeepSpeed run on a machine compiles a shared-memory comm op (~90 s, cached in
~/.cache/torch_extensions); later runs take well under a minute.
"""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_distributed import run_two_ranks  # noqa: E402

import deepspeed  # noqa: E402,F401  (a pinned requirement: missing it is a failure, not a skip)


def test_deepspeed_zero2_lora_checkpoint_converts_and_loads(tmp_path):
    from osum_echat.config import load_config
    from osum_echat.models import build_model
    from osum_echat.models.checkpoint import load_checkpoint
    from osum_echat.train.checkpointing import convert_deepspeed_dir_to_pt

    ds_args = ["--train_engine", "deepspeed", "--deepspeed_config", "conf/ds_stage2.json",
               "--deepspeed.save_states", "model+optimizer"]
    lora = ["use_lora=true", "lora_rank=4", "lora_alpha=8", "fire_module=link_and_lora"]
    ranks, exp, _ = run_two_ranks(tmp_path, ds_args, overrides=lora, timeout=900)
    r0, r1 = ranks
    assert r0["step"] == r1["step"] >= 2
    assert r0["params"] == r1["params"]
    assert any("lora_" in n for n in r0["trainable"])
    assert not any(n.startswith("encoder") for n in r0["trainable"])  # link_and_lora freezes it

    ds_dir = exp / "step_2"
    assert (ds_dir / "mp_rank_00_model_states.pt").exists()
    converted = convert_deepspeed_dir_to_pt(str(ds_dir), str(tmp_path / "step_2_converted.pt"))
    weights = torch.load(converted, weights_only=True)
    assert any("lora_" in k for k in weights)

    # the converted file loads into a model built from the run's own train.yaml
    config = load_config(exp / "train.yaml")
    model = build_model(config, "cpu")
    load_checkpoint(model, converted)
    state = model.state_dict()
    assert all(k in weights for k in state), "converted checkpoint misses model keys"
    for k, v in weights.items():
        torch.testing.assert_close(state[k], v.to(state[k].dtype))
    # and it equals what rank 0 wrote as the plain .pt of the same step
    plain = torch.load(exp / "step_2.pt", weights_only=True)
    for k in plain:
        torch.testing.assert_close(plain[k], weights[k])

    # the same command with one more epoch resumes from the DeepSpeed checkpoint
    step = r0["step"]
    ranks, _, proc = run_two_ranks(tmp_path, ds_args, overrides=[*lora, "max_epoch=2"], timeout=900)
    assert f"resumed from epoch_0: step {step}" in proc.stderr
    assert ranks[0]["step"] == ranks[1]["step"] > step
    assert ranks[0]["params"] == ranks[1]["params"]
