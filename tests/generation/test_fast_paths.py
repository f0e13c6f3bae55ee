"""The decode loop's speed pieces: KV buffers, the ready-made step mask, matmuls in weight blocks."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2Config
from transformers.cache_utils import DynamicCache

from osum_echat.generation import chunked_linear as cl
from osum_echat.generation import kv_cache
from osum_echat.generation.kv_cache import DecodeCache, StepMask


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("k,n,bias", [(64, 1344, False), (96, 520, True), (896, 4864, False)])
@pytest.mark.parametrize("rows", [4, 8, 15])
def test_blocks_give_the_bits_of_one_linear_on_one_thread(one_thread, k, n, bias, rows):
    g = torch.Generator().manual_seed(rows)
    w, x = torch.randn(n, k, generator=g), torch.randn(rows, 1, k, generator=g)
    b = torch.randn(n, generator=g) if bias else None
    for block in (8, 40, cl.block_rows(k)):
        assert torch.equal(cl.chunked_linear(x, w, b, block), F.linear(x, w, b))


def test_block_rows_fill_about_half_a_mebibyte():
    assert cl.block_rows(896) == 128 and cl.block_rows(4864) == 32  # 458 KiB and 622 KiB
    assert cl.block_rows(64, block_bytes=2048) == 8


def test_only_float32_linears_wide_enough_are_split_and_restored(one_thread, monkeypatch):
    calls = []
    monkeypatch.setattr(cl, "_blocked", lambda x, blocks: calls.append(len(blocks)) or cl.F.linear(x, w))
    wide, narrow, half = nn.Linear(64, 1024), nn.Linear(64, 32), nn.Linear(64, 1024).to(torch.bfloat16)
    w = wide.weight
    with torch.no_grad(), cl.chunked_linears([nn.ModuleList([wide, narrow, half])], block_bytes=2048) as patched:
        assert patched == [wide]
        for rows in (1, 3, 4, 15, 16):
            wide(torch.randn(rows, 64))
        torch.set_num_threads(2)  # more threads: plain linear
        wide(torch.randn(8, 64))
    assert calls == [128, 128]  # 1024 / 8 rows per block; only for 4 and 15 rows, one thread
    assert "forward" not in wide.__dict__


def _config(**kw):
    base = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                intermediate_size=64, vocab_size=100, attn_implementation="sdpa")
    return Qwen2Config(**dict(base, **kw))


def test_step_mask_is_the_padding_mask_of_each_step(monkeypatch):
    prompt = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]])
    sm = StepMask(prompt, _config())
    full = prompt.bool()
    for _ in range(3):
        full = torch.cat([full, torch.ones(len(full), 1, dtype=torch.bool)], 1)
        assert torch.equal(sm.next()["full_attention"], full[:, None, None, :])
    sm.select([1], torch.tensor([1]))  # only the unpadded row is left: SDPA needs no mask
    assert sm.next() == {"full_attention": None}
    monkeypatch.setattr(kv_cache, "MIN_SPARE", 1)  # growing keeps what was there
    sm = StepMask(prompt, _config())
    masks = [sm.next()["full_attention"] for _ in range(9)]
    assert masks[-1].shape[-1] == 13 and torch.equal(masks[-1][:, 0, 0, :4], prompt.bool())


def test_other_attention_gets_the_2d_mask_to_build_from():
    prompt = torch.tensor([[0, 1, 1], [1, 1, 1]])
    for cfg in (_config(attn_implementation="eager"), _config(use_sliding_window=True, sliding_window=2,
                                                            max_window_layers=1)):
        sm = StepMask(prompt, cfg)
        assert torch.equal(sm.next(), torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]).bool())


@pytest.mark.parametrize("spare", [1, 256])
def test_cache_buffers_hold_what_a_dynamic_cache_holds(monkeypatch, spare):
    monkeypatch.setattr(kv_cache, "MIN_SPARE", spare)
    g = torch.Generator().manual_seed(0)
    ours, ref = DecodeCache(2), DynamicCache()
    for step, length in enumerate([5, 1, 1, 1, 1, 1]):
        if step == 3:  # a row finished
            keep = torch.tensor([0, 2])
            ours.batch_select_indices(keep)
            ref.batch_select_indices(keep)
        for layer in range(2):
            k, v = (torch.randn(3 if step < 3 else 2, 2, length, 8, generator=g) for _ in range(2))
            got, want = ours.update(k, v, layer), ref.update(k, v, layer)
            if step == 0:  # the prefill attends over its own keys and values
                assert got[0] is k and got[1] is v
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert ours.get_seq_length() == ref.get_seq_length() == 5 + step
