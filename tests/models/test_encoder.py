"""Whisper-style encoder and adapter: padding behaviour, upstream's mask quirk,
gradient checkpointing, and initialisation from an openai-whisper file."""
import copy

import pytest
import torch

from osum_echat.models.adapter import CausalConvDownsampler, build_adapter_transformer
from osum_echat.models.whisper_encoder import build_whisper_encoder, load_whisper_weights


def _encoder(conf, seed=0, **kw):
    conf = dict(conf, **kw)
    torch.manual_seed(seed)
    return build_whisper_encoder(80, conf).eval()


def _run(enc, lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    items = [torch.randn(n, 80, generator=g) for n in lengths]
    batch = torch.nn.utils.rnn.pad_sequence(items, batch_first=True)
    with torch.no_grad():
        out, mask = enc(batch, torch.tensor(lengths))
        alone = [enc(x[None], torch.tensor([len(x)])) for x in items]
    return out, mask, alone


@pytest.mark.parametrize("lengths", [(100, 64, 38), (99, 64, 20)])
def test_padded_batch_equals_each_item_alone(tiny_config, lengths):
    enc = _encoder(tiny_config["encoder_conf"])
    out, mask, alone = _run(enc, lengths)
    for i, (a_out, a_mask) in enumerate(alone):
        n = int(a_mask.sum())
        assert int(mask[i].sum()) == n
        torch.testing.assert_close(out[i, :n], a_out[0, :n], rtol=1e-5, atol=1e-5)


def test_odd_item_in_even_batch_loses_last_frame(tiny_config):
    # upstream quirk: the subsampled mask is mask[:, 1::2] when the longest input is even
    enc = _encoder(tiny_config["encoder_conf"])
    out, mask, alone = _run(enc, (100, 63))
    assert int(alone[1][1].sum()) == 32  # alone: ceil(63 / 2)
    assert int(mask[1].sum()) == 31
    # with the longest input odd, the same item keeps all 32 frames
    _, mask_odd, _ = _run(enc, (101, 63))
    assert int(mask_odd[1].sum()) == 32


def test_thirty_seconds_and_too_long(tiny_config):
    enc = _encoder(tiny_config["encoder_conf"])
    with torch.no_grad():
        out, mask = enc(torch.randn(1, 3000, 80), torch.tensor([3000]))
    assert out.shape == (1, 1500, 64) and bool(mask.all())
    with pytest.raises(ValueError, match="positional table"):
        enc(torch.randn(1, 60002, 80), torch.tensor([60002]))


def test_gradient_checkpointing_gives_equal_gradients(tiny_config):
    conf = dict(tiny_config["encoder_conf"], gradient_checkpointing=False)
    plain = _encoder(conf).train()
    ckpt = copy.deepcopy(plain)
    ckpt.gradient_checkpointing = True
    x = torch.randn(2, 50, 80)
    lens = torch.tensor([50, 30])
    for enc in (plain, ckpt):
        out, mask = enc(x, lens)
        (out * mask[..., None]).pow(2).sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        assert a.grad is not None and a.grad.abs().sum() > 0, name
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


def test_downsampler_is_causal_and_halves_lengths():
    torch.manual_seed(0)
    down = CausalConvDownsampler(16, 4).eval()
    x = torch.randn(1, 41, 16)
    mask = torch.ones(1, 41, dtype=torch.bool)
    y, m = down(x, mask)
    assert y.shape == (1, 11, 16) and m.shape == (1, 11)
    # frames after t cannot change outputs that only look at frames <= t
    x2 = x.clone()
    x2[:, 30:] = 5.0
    y2, _ = down(x2, mask)
    torch.testing.assert_close(y[:, :7], y2[:, :7])
    assert not torch.allclose(y[:, 8:], y2[:, 8:])
    for rate, expect in ((2, 21), (8, 6)):
        out, m = CausalConvDownsampler(16, rate)(x, mask)
        assert out.shape[1] == expect == m.shape[1]


def test_adapter_transformer_is_fixed_size():
    t = build_adapter_transformer(64)
    assert len(t.encoders) == 4
    block = t.encoders[0]
    assert block.self_attn.heads == 4
    assert block.feed_forward.w_1.out_features == 2560
    assert block.self_attn.linear_k.bias is not None
    assert isinstance(block.feed_forward.activation, torch.nn.ReLU)


def test_load_openai_whisper_checkpoint(tmp_path, tiny_config):
    import whisper.model as whisper
    dims = whisper.ModelDimensions(n_mels=80, n_audio_ctx=40, n_audio_state=64, n_audio_head=4,
                                   n_audio_layer=2, n_vocab=100, n_text_ctx=8, n_text_state=64,
                                   n_text_head=4, n_text_layer=1)
    torch.manual_seed(3)
    ref = whisper.Whisper(dims).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / "tiny_whisper.pt"
    torch.save({"dims": dims.__dict__, "model_state_dict": ref.state_dict()}, path)

    conf = dict(tiny_config["encoder_conf"], linear_units=256, num_blocks=2, output_size=64, attention_heads=4)
    enc = _encoder(conf, seed=9)
    load_whisper_weights(enc, str(path))
    mel = torch.randn(1, 80, 80)
    with torch.no_grad():
        want = ref.encoder(mel)
        got, _ = enc(mel.transpose(1, 2), torch.tensor([80]))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def _reference_block(block, x, key_mask):
    """One pre-LN block as written plainly: three q/k/v matmuls, x + h residuals."""
    att = block.self_attn
    h = block.norm1(x)
    q, k, v = (att._split(m(h)) for m in (att.linear_q, att.linear_k, att.linear_v))
    mask = None if key_mask is None else key_mask[:, None, None, :]
    o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    x = x + att.linear_out(o.transpose(1, 2).reshape(x.shape))
    return x + block.feed_forward(block.norm2(x))


@pytest.mark.parametrize("key_bias", [True, False])
def test_fused_qkv_and_inplace_residuals_match_the_plain_block(tiny_config, key_bias):
    enc = _encoder(tiny_config["encoder_conf"], key_bias=key_bias)
    block = enc.encoders[0]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 57, block.norm1.normalized_shape[0], generator=g)
    key_mask = torch.arange(57)[None] < torch.tensor([[57], [40]])
    with torch.no_grad():  # inference: in-place residuals, one stacked q/k/v matmul
        assert torch.equal(block(x.clone(), key_mask), _reference_block(block, x, key_mask))
    x.requires_grad_(True)  # training: the same values and gradients
    out, ref = block(x, key_mask), _reference_block(block, x, key_mask)
    assert torch.equal(out, ref)
    grads = torch.autograd.grad(out.square().sum(), [x, block.self_attn.linear_k.weight])
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, block.self_attn.linear_k.weight])
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
