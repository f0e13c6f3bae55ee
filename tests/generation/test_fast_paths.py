"""The decode loop's speed pieces: KV buffers, the ready-made step mask, packed weights, per-row prefill."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2Config
from transformers.cache_utils import DynamicCache

from osum_echat.generation import packed_linear as pl
from osum_echat.generation import kv_cache
from osum_echat.generation.kv_cache import DecodeCache, StepMask
from osum_echat.generation.prefill import prefill, shared_prefix


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("rows", [1, 4, 8, 32])
@pytest.mark.parametrize("bias", [False, True])
def test_packed_weights_multiply_like_the_plain_linear(dtype, tol, rows, bias, monkeypatch):
    monkeypatch.setattr(pl, "MIN_NUMEL", 0)
    g = torch.Generator().manual_seed(rows)
    lin = nn.Linear(96, 520, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(520, 96, generator=g))
        lin.to(dtype)
        x = torch.randn(rows, 1, 96, generator=g).to(dtype)
        exact = (x.double() @ lin.weight.double().t() + (lin.bias.double() if bias else 0)).float()
        with pl.packed_linears([lin], "on", batch_size=rows) as patched:
            assert patched == ([lin] if rows >= pl.MIN_ROWS[dtype] else [])
            got = lin(x)
    assert got.dtype == dtype and got.shape == (rows, 1, 520)
    scale = exact.abs().max()
    assert (got.float() - exact).abs().max() <= tol * scale
    assert (F.linear(x, lin.weight, lin.bias).float() - exact).abs().max() <= tol * scale


def test_only_4_to_32_float32_rows_of_big_cpu_weights_take_the_packed_path(monkeypatch):
    monkeypatch.setattr(pl, "MIN_NUMEL", 64 * 1000)
    calls = []
    real = pl._forward
    monkeypatch.setattr(pl, "_forward", lambda m, p, x: calls.append(x.numel() // x.shape[-1]) or real(m, p, x))
    used = []
    monkeypatch.setattr(pl.torch.ops.mkldnn, "_linear_pointwise", _spy(used, torch.ops.mkldnn._linear_pointwise),
                        raising=False)
    big, small, half = nn.Linear(64, 1024), nn.Linear(64, 32), nn.Linear(64, 1024).to(torch.bfloat16)
    with torch.no_grad(), pl.packed_linears([nn.ModuleList([big, small, half, big])], "on") as patched:
        assert patched == [big, half]  # each once; the small one is not worth a oneDNN call
        for rows in (1, 3, 4, 32, 33):
            big(torch.randn(rows, 64))
        half(torch.randn(1, 64, dtype=torch.bfloat16))  # bfloat16: packed from one row on
    assert calls == [1, 3, 4, 32, 33, 1] and used == [4, 32, 1]
    assert "forward" not in big.__dict__ and "forward" not in half.__dict__
    with torch.no_grad():
        with pl.packed_linears([big], "off") as patched:
            assert patched == []
        with pl.packed_linears([big, half], "on", batch_size=3) as patched:  # never 4 rows: float32 plain
            assert patched == [half]


def test_a_list_found_once_packs_what_the_walk_finds(monkeypatch):
    """The scheduler finds the candidates once (eligible_linears) instead of walking the model each step."""
    monkeypatch.setattr(pl, "MIN_NUMEL", 64 * 1000)
    big, small, half = nn.Linear(64, 1024), nn.Linear(64, 32), nn.Linear(64, 1024).to(torch.bfloat16)
    model = nn.ModuleList([big, small, nn.Sequential(half), big])
    found = pl.eligible_linears([model])
    assert found == [big, half]
    for rows in (1, 3, 4):
        with torch.no_grad(), pl.packed_linears([model], "on", rows) as walked:
            walked = list(walked)
        with torch.no_grad(), pl.packed_linears((), "on", rows, found) as listed:
            assert listed == walked and all("forward" in m.__dict__ for m in listed)
            assert torch.allclose(big(torch.ones(rows, 64)), F.linear(torch.ones(rows, 64), big.weight, big.bias),
                                  atol=1e-4)
        assert "forward" not in big.__dict__ and "forward" not in half.__dict__
    assert walked == [big, half]


def _spy(log, fn):
    return lambda x, *a: log.append(x.numel() // x.shape[-1]) or fn(x, *a)


def test_packs_are_made_once_and_remade_when_the_weight_changes(monkeypatch):
    monkeypatch.setattr(pl, "MIN_NUMEL", 0)
    made = []
    real = torch.ops.mkldnn._reorder_linear_weight
    monkeypatch.setattr(pl.torch.ops.mkldnn, "_reorder_linear_weight", lambda w, n: made.append(1) or real(w, n),
                        raising=False)
    lin, x = nn.Linear(32, 64), torch.randn(8, 32)
    with torch.no_grad():
        for _ in range(3):
            with pl.packed_linears([lin], "on"):
                lin(x)
        assert len(made) == 1
        lin.weight.mul_(2)  # an optimizer step or a checkpoint load: the old pack is stale
        with pl.packed_linears([lin], "on"):
            got = lin(x)
        assert len(made) == 2
        torch.testing.assert_close(got, F.linear(x, lin.weight, lin.bias))


def test_auto_mode_does_not_pack_what_does_not_fit(monkeypatch, caplog):
    monkeypatch.setattr(pl, "MIN_NUMEL", 0)
    lin = nn.Linear(256, 1024)  # 1 MiB of weights
    monkeypatch.setattr(pl, "available_memory", lambda: 3 << 19)  # 1.5 MiB free: half is not enough
    with torch.no_grad(), caplog.at_level("WARNING"), pl.packed_linears([lin], "auto") as patched:
        assert patched == []
    assert "not packing 0.0 GiB" in caplog.text and "packed_weights='on'" in caplog.text
    monkeypatch.setattr(pl, "available_memory", lambda: 1 << 30)
    with torch.no_grad(), pl.packed_linears([lin], "auto") as patched:
        assert patched == [lin]
    with pytest.raises(ValueError, match="packed_weights 'sometimes'"):
        with pl.packed_linears([lin], "sometimes"):
            pass


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


def test_shared_prefix_is_what_every_prompt_starts_with():
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    b[:3] = a[:3]
    assert shared_prefix([a]) == 0
    assert shared_prefix([a, b]) == 3
    assert shared_prefix([a, a.clone(), a[:4]]) == 3  # each row keeps one position of its own
    assert shared_prefix([a, torch.randn(6, 4)]) == 0


@torch.no_grad()
@pytest.mark.parametrize("shared", [0, 4])
@pytest.mark.parametrize("slack", [0.0, 100.0])  # each row alone / all rows together
def test_prefill_makes_the_cache_of_the_padded_batch(shared, slack, monkeypatch):
    """A shared prefix run once, then the rows' own parts together or one by one: the next step
    gets what a padded batch prefill of the whole prompts gives it (the padding differs; the mask
    hides it)."""
    from osum_echat.generation import prefill as prefill_module
    monkeypatch.setattr(prefill_module, "PAD_SLACK", slack)
    from transformers import Qwen2Model
    torch.manual_seed(0)
    model = Qwen2Model(_config()).eval()
    lengths, width = [5, 9, 7], 9
    embeds = [torch.randn(n, 32) for n in lengths]
    for e in embeds[1:]:
        e[:shared] = embeds[0][:shared]
    mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    padded = torch.zeros(3, width, 32)
    for i, e in enumerate(embeds):
        padded[i, width - len(e):] = e
    ref_cache = DecodeCache(2)
    ref = model(inputs_embeds=padded, attention_mask=mask, position_ids=positions, past_key_values=ref_cache)
    assert shared_prefix(embeds) == shared
    cache, last, last_pos, step_mask = prefill(model, embeds)
    torch.testing.assert_close(last, ref.last_hidden_state[:, -1])
    assert last_pos.tolist() == [n - 1 for n in lengths]
    for ours, theirs in zip(cache.layers, ref_cache.layers):
        for i, n in enumerate(lengths):
            keep = step_mask.buf[i, :ours.length]  # where row i attends: its prefix and own positions
            assert int(keep.sum()) == n
            torch.testing.assert_close(ours.keys[i, :, keep], theirs.keys[i, :, width - n:])
            torch.testing.assert_close(ours.values[i, :, keep], theirs.values[i, :, width - n:])
    step = torch.randn(3, 1, 32)
    full = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], 1)
    a = model(inputs_embeds=step, attention_mask=step_mask.next(), position_ids=last_pos[:, None] + 1,
              past_key_values=cache)
    b = model(inputs_embeds=step, attention_mask=full, position_ids=positions[:, -1:] + 1, past_key_values=ref_cache)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state)
