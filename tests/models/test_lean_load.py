"""Lean load: built on meta, the checkpoint assigned (memory-mapped, no copy
when the dtype matches), the same model as build + copying load."""
import os
import sys

import pytest
import torch

from osum_echat.models import load_for_inference, load_model
from osum_echat.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

sys.path.insert(0, os.path.dirname(__file__))
from osum_model_helpers import make_batch, tiny_model  # noqa: E402


def _batch(model):
    return make_batch(model.tokenizer, "speech2text_token", ["good morning", "hi"], [64, 40], [20, 12])


@pytest.fixture(scope="module")
def saved(tiny_config, tmp_path_factory):
    model = tiny_model(tiny_config, seed=3).eval()
    path = tmp_path_factory.mktemp("lean") / "ckpt.pt"
    save_checkpoint(model.state_dict(), path)
    return model, path


def _mapped_ranges(path):
    """Address ranges where `path` is memory-mapped in this process (Linux)."""
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith(str(path)):
                lo, hi = line.split()[0].split("-")
                ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


def test_same_weights_and_loss_as_the_copying_load(tiny_config, saved):
    ref, path = saved
    model = load_for_inference(tiny_config, path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    want, got = ref.state_dict(), model.state_dict()
    assert set(want) == set(got)
    for k in want:
        assert torch.equal(want[k], got[k]), k
    assert model.lm_head.weight is model.embed_tokens.weight  # tied again, one tensor
    batch = _batch(ref)
    with torch.no_grad():
        assert torch.equal(ref(batch)["loss"], model(batch)["loss"])


def test_matching_dtype_assigns_the_mapped_file_without_a_copy(tiny_config, saved, tmp_path):
    ref, _ = saved
    path = tmp_path / "bf16.pt"
    save_checkpoint({k: v.bfloat16() for k, v in ref.state_dict().items()}, path)
    model = load_for_inference(tiny_config, path, dtype="bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    # the parameters live in the memory-mapped file itself: nothing was copied
    ranges = _mapped_ranges(path)
    for name in ("speech_head.weight", "encoder.embed.conv.0.weight", "llama_model.model.embed_tokens.weight"):
        ptr = model.get_parameter(name).data_ptr()
        assert any(lo <= ptr < hi for lo, hi in ranges), name
    ref_bf16 = tiny_model(tiny_config, seed=3).eval()
    load_checkpoint(ref_bf16, path)
    ref_bf16.to(torch.bfloat16)
    batch = _batch(ref)
    with torch.no_grad():
        assert torch.equal(ref_bf16(batch)["loss"], model(batch)["loss"])


def test_lora_adapters_are_fresh_when_the_checkpoint_has_none(tiny_config, saved):
    ref, path = saved
    model, report = load_model({**tiny_config, "use_lora": True, "lora_rank": 4}, path, strict=False)
    assert report.missing and all(".lora_" in n for n in report.missing)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    lora_a = [p for n, p in model.named_parameters() if "lora_A" in n]
    assert lora_b and all(torch.count_nonzero(p) == 0 for p in lora_b)  # PEFT init: B = 0
    assert all(p.requires_grad for p in lora_a) and all(float(p.detach().abs().sum()) > 0 for p in lora_a)
    batch = _batch(ref)
    with torch.no_grad():  # B = 0: the adapted model is the base model
        assert torch.allclose(ref(batch)["loss"], model.eval()(batch)["loss"], atol=1e-6)
    with pytest.raises(CheckpointError, match="lora_A"):
        load_model({**tiny_config, "use_lora": True, "lora_rank": 4}, path, strict=True)


def test_lora_checkpoint_round_trip(tiny_config, tmp_path):
    conf = {**tiny_config, "use_lora": True, "lora_rank": 4}
    ref = tiny_model(conf, seed=5).eval()
    save_checkpoint(ref.state_dict(), tmp_path / "lora.pt")
    model = load_for_inference(conf, tmp_path / "lora.pt")
    batch = _batch(ref)
    with torch.no_grad():
        assert torch.equal(ref(batch)["loss"], model(batch)["loss"])


def test_partial_checkpoint_falls_back_to_a_full_build(tiny_config, saved, tmp_path):
    ref, _ = saved
    enc_only = {k: v for k, v in ref.state_dict().items() if k.startswith("encoder.")}
    save_checkpoint(enc_only, tmp_path / "enc.pt")
    model, report = load_model(tiny_config, tmp_path / "enc.pt", strict=False)
    assert report.missing and not any(p.is_meta for p in model.parameters())
    assert torch.equal(model.encoder.state_dict()[next(iter(model.encoder.state_dict()))],
                       ref.encoder.state_dict()[next(iter(ref.encoder.state_dict()))])
