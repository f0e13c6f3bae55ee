"""Checkpoints: the released key layout, round trips, LoRA/plain and DDP
names, grouped mismatch reports, the CLI tools."""
import os
import sys

import pytest
import torch

from osum_echat.bin import average_model, convert_checkpoint
from osum_echat.config import load_config
from osum_echat.models import build_model
from osum_echat.models.checkpoint import (CheckpointError, compare_keys, load_checkpoint,
                                          read_key_table, save_checkpoint)

sys.path.insert(0, os.path.dirname(__file__))
from osum_model_helpers import make_batch, tiny_model  # noqa: E402

MANIFEST = "conf/reference/osum_echat_checkpoint_keys.tsv"  # shipped in the repo


def test_full_size_meta_model_has_the_released_keys(repo_root):
    model = build_model(load_config(repo_root / "conf" / "ct_config.yaml"), device="meta")
    wanted = read_key_table(repo_root / MANIFEST)
    state = model.state_dict()
    report = compare_keys({k: tuple(v.shape) for k, v in state.items()}, wanted)
    assert report.ok, report.summary()
    assert len(state) == len(wanted) == 888
    # the tied embedding is one tensor under four names
    assert model.lm_head.weight is model.embed_tokens.weight
    # and loading a state dict with exactly those names and shapes reports nothing
    fake = {k: torch.empty(shape, device="meta") for k, shape in wanted.items()}
    result = model.load_state_dict(fake, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_check_keys_cli(repo_root, tmp_path, capsys):
    args = ["--config", "conf/ct_config.yaml", "--check_keys"]
    assert convert_checkpoint.main(args + [MANIFEST]) == 0
    lines = (repo_root / MANIFEST).read_text().splitlines()
    broken = [ln.replace("4099x2048", "4098x2048") for ln in lines if not ln.startswith("ln_speech")]
    (tmp_path / "broken.tsv").write_text("\n".join(broken) + "\nextra.weight\t3\tfloat32\n")
    capsys.readouterr()
    assert convert_checkpoint.main(args + [str(tmp_path / "broken.tsv")]) == 1
    out = capsys.readouterr().out
    assert "missing ln_speech: 2 (ln_speech.weight, ln_speech.bias)" in out and "unexpected extra: 1 (extra.weight)" in out
    assert "speech_token_emded.weight: checkpoint (4098, 2048) vs model (4099, 2048)" in out


def _batch(model):
    return make_batch(model.tokenizer, "speech2text_token", ["good morning"], [64], [20])


def test_round_trip_restores_the_loss(tiny_config, tmp_path):
    a = tiny_model(tiny_config, seed=1).eval()
    b = tiny_model(tiny_config, seed=2).eval()
    batch = _batch(a)
    with torch.no_grad():
        want, before = a(batch)["loss"], b(batch)["loss"]
    assert not torch.allclose(want, before)
    for name in ("ckpt.pt", "ckpt.safetensors"):
        save_checkpoint(a.state_dict(), tmp_path / name)
        b = tiny_model(tiny_config, seed=2).eval()
        assert load_checkpoint(b, tmp_path / name).ok
        with torch.no_grad():
            torch.testing.assert_close(b(batch)["loss"], want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "ckpt.safetensors"]  # no temp files left


def test_ddp_prefix_and_lora_layout_load_both_ways(tiny_config, tmp_path):
    plain = tiny_model(tiny_config, seed=1).eval()
    save_checkpoint({"module." + k: v for k, v in plain.state_dict().items()}, tmp_path / "ddp.pt")
    lora = tiny_model(tiny_config, seed=3, use_lora=True, lora_rank=4).eval()
    report = load_checkpoint(lora, tmp_path / "ddp.pt")
    assert not report.unexpected and not report.mismatched
    assert report.missing and all("lora_" in k for k in report.missing)
    for name, p in plain.base_llm().named_parameters():
        q = dict(lora.base_llm().named_parameters())
        key = name.rsplit(".", 1)
        alt = f"{key[0]}.base_layer.{key[1]}"
        torch.testing.assert_close(q.get(name, q.get(alt)), p)
    save_checkpoint(lora.state_dict(), tmp_path / "lora.pt")
    back = tiny_model(tiny_config, seed=4)
    report = load_checkpoint(back, tmp_path / "lora.pt")
    assert not report.missing and report.unexpected and all("lora_" in k for k in report.unexpected)


def test_mismatch_is_reported_not_raised(tiny_config, tmp_path, caplog):
    model = tiny_model(tiny_config)
    state = model.state_dict()
    state["speech_head.weight"] = torch.zeros(3, 3)
    del state["encoder.after_norm.bias"]
    save_checkpoint(state, tmp_path / "bad.pt")
    before = model.speech_head.weight.clone()
    report = load_checkpoint(model, tmp_path / "bad.pt")
    assert report.missing == ["encoder.after_norm.bias"]
    assert report.mismatched == [("speech_head.weight", (3, 3), tuple(before.shape))]
    assert torch.equal(model.speech_head.weight, before)  # left as it was
    with pytest.raises(CheckpointError, match="speech_head.weight"):
        load_checkpoint(model, tmp_path / "bad.pt", strict=True)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(model, tmp_path / "junk.pt")


def test_average_model_cli(tmp_path):
    for i, value in enumerate([1.0, 2.0, 6.0]):
        save_checkpoint({"w": torch.full((2,), value, dtype=torch.bfloat16), "step": torch.tensor(i)},
                        tmp_path / f"step_{i}.pt")
        os.utime(tmp_path / f"step_{i}.pt", (1000 + i, 1000 + i))
        (tmp_path / f"step_{i}.yaml").write_text(f"loss_dict:\n  loss: {[0.5, 0.1, 0.3][i]}\n")
    for side in ("step_2.state.pt", "step_2.rng.pt"):  # saved beside a checkpoint by training, newest: not weights
        torch.save({"optimizer": {}}, tmp_path / side)
    dst = tmp_path / "avg.pt"
    assert average_model.main(["--src_path", str(tmp_path), "--dst_model", str(dst), "--num", "2"]) == 0
    avg = torch.load(dst, weights_only=True)
    assert avg["w"].dtype == torch.bfloat16 and avg["w"].tolist() == [4.0, 4.0]  # last two: 2 and 6
    assert average_model.main(["--src_path", str(tmp_path), "--dst_model", str(dst), "--num", "2",
                               "--val_best"]) == 0
    assert torch.load(dst, weights_only=True)["w"].tolist() == [4.0, 4.0]  # best: 0.1 (2) and 0.3 (6)
    assert average_model.main(["--src_path", str(tmp_path), "--dst_model", str(dst), "--num", "9"]) == 2
