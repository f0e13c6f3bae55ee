"""cosyvoice.yaml (HyperPyYAML) read inertly; full-size keys strict against the reference manifests."""
from __future__ import annotations

import pytest
import torch

from osum_echat.bin.token2wav import check_keys, read_key_manifest
from osum_echat.token2wav.config import (Token2WavConfig, Token2WavConfigError, config_to_yaml, load_config,
                                         load_hyperpyyaml_inert, tiny_config)
from osum_echat.token2wav.hift import HiFTGenerator, fold_hift_state_dict, unfold_hift_state_dict

# The released file's shape: seeds via !apply, an LLM we never build, !ref everywhere, a GAN wrapper
# referring to the vocoder, function handles via !name, and a 1e-06 that plain YAML reads as a string.
RELEASED_LIKE = """
__set_seed1: !apply:random.seed [1986]
__set_seed3: !apply:torch.manual_seed [1986]
sample_rate: 22050
text_encoder_input_size: 512
spk_embed_dim: 192
llm: !new:cosyvoice.llm.llm.TransformerLM
    text_encoder_input_size: !ref <text_encoder_input_size>
    text_token_size: 60515
    spk_embed_dim: !ref <spk_embed_dim>
    sampling: !name:cosyvoice.utils.common.ras_sampling
        top_k: 25
flow: !new:cosyvoice.flow.flow.MaskedDiffWithXvec
    input_size: 512
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: 4096
    input_frame_rate: 25
    only_mask_loss: True
    encoder: !new:cosyvoice.transformer.encoder.ConformerEncoder
        output_size: 512
        attention_heads: 8
        linear_units: 2048
        num_blocks: 6
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        input_size: 512
        use_cnn_module: False
        macaron_style: False
    length_regulator: !new:cosyvoice.flow.length_regulator.InterpolateRegulator
        channels: 80
        sampling_ratios: [1, 1, 1, 1]
    decoder: !new:cosyvoice.flow.flow_matching.ConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.ConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [256, 256]
            dropout: 0.0
            attention_head_dim: 64
            n_blocks: 4
            num_mid_blocks: 12
            num_heads: 8
            act_fn: 'gelu'
hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: 512
    nb_harmonics: 8
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 8]
    upsample_kernel_sizes: [16, 16]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: 512
mel_spec_transform1: !name:matcha.utils.audio.mel_spectrogram
    n_fft: 1024
    sampling_rate: !ref <sample_rate>
    fmax: null
hifigan: !new:cosyvoice.hifigan.hifigan.HiFiGan
    generator: !ref <hift>
    discriminator: !new:cosyvoice.hifigan.discriminator.MultipleDiscriminator
        mpd: !new:matcha.hifigan.models.MultiPeriodDiscriminator
    mel_spec_transform: [
        !ref <mel_spec_transform1>
    ]
feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    n_fft: 1024
    num_mels: 80
    sampling_rate: !ref <sample_rate>
    hop_size: 256
    win_size: 1024
    fmin: 0
    fmax: 8000
    center: False
"""


def test_released_layout_reads_as_the_25hz_model(tmp_path):
    path = tmp_path / "cosyvoice.yaml"
    path.write_text(RELEASED_LIKE)
    cfg = load_config(path)
    assert cfg == Token2WavConfig()          # every size and constant of spec §1
    assert cfg.flow.cfm.sigma_min == 1e-6 and isinstance(cfg.flow.cfm.sigma_min, float)
    assert cfg.hift.sampling_rate == 22050 and cfg.mel_hop == 256
    data = load_hyperpyyaml_inert(path)
    assert data["feat_extractor"].kwargs["sampling_rate"] == 22050          # !ref resolved
    assert data["hifigan"].kwargs["generator"] is data["hift"]             # a ref to a node, not a copy
    assert data["__set_seed1"].kind == "apply" and data["__set_seed1"].args == [1986]


def test_written_yaml_round_trips_and_other_sizes_build(tmp_path):
    for cfg in (tiny_config(), Token2WavConfig()):
        path = tmp_path / "c.yaml"
        path.write_text(config_to_yaml(cfg))
        assert load_config(path) == cfg
    assert tiny_config().flow.estimator.channels == (32, 32)


@pytest.mark.parametrize("edit, words", [
    (("MaskedDiffWithXvec", "CausalMaskedDiffWithXvec"), ["'flow'", "CausalMaskedDiffWithXvec"]),
    (("generator.HiFTGenerator", "generator.NSFHiFTGenerator"), ["'hift'", "NSFHiFTGenerator"]),
    (("    num_mid_blocks: 12", "    num_mid_blockz: 12"), ["flow.decoder.estimator.num_mid_blockz"]),
    (("input_layer: 'linear'", "input_layer: 'conv2d'"), ["flow.encoder.input_layer", "conv2d"]),
])
def test_unknown_class_or_option_is_one_error_naming_it(tmp_path, edit, words):
    path = tmp_path / "cosyvoice.yaml"
    path.write_text(RELEASED_LIKE.replace(*edit, 1))
    with pytest.raises(Token2WavConfigError) as e:
        load_config(path)
    for w in words + [str(path)]:
        assert w in str(e.value)


def test_full_size_keys_load_strictly_on_meta(repo_root):
    ref = repo_root / "conf" / "reference"
    flow_tsv = ref / "cosyvoice_300m_25hz_flow_keys.tsv"
    hift_tsvs = [ref / "cosyvoice_300m_25hz_hift_keys.tsv", ref / "cosyvoice_300m_25hz_hift_keys_legacy_weight_norm.tsv"]
    assert len(read_key_manifest(flow_tsv)) == 1185
    assert [len(read_key_manifest(p)) for p in hift_tsvs] == [227, 227]
    assert check_keys(flow_tsv, hift_tsvs) == []


def test_key_check_reports_missing_unexpected_and_shape(repo_root, tmp_path):
    ref = repo_root / "conf" / "reference"
    lines = (ref / "cosyvoice_300m_25hz_flow_keys.tsv").read_text().splitlines()
    bad = [line for line in lines if not line.startswith("encoder.after_norm.bias")] + ["extra.weight\t[3]"]
    bad = [line.replace("[4096, 512]", "[4097, 512]") for line in bad]
    (tmp_path / "flow.tsv").write_text("\n".join(bad))
    hift_lines = (ref / "cosyvoice_300m_25hz_hift_keys.tsv").read_text().splitlines()
    (tmp_path / "hift.tsv").write_text("\n".join(hift_lines[:-1]))
    problems = check_keys(tmp_path / "flow.tsv", [tmp_path / "hift.tsv"])
    assert len(problems) == 2
    assert "1 missing" in problems[0] and "encoder.after_norm.bias" in problems[0]
    assert "1 unexpected" in problems[0] and "1 wrong shape" in problems[0] and "input_embedding" in problems[0]
    assert "1 missing" in problems[1]


def test_both_weight_norm_forms_and_generator_prefix_give_the_same_weights():
    torch.manual_seed(0)
    hift = HiFTGenerator(tiny_config().hift)
    legacy = unfold_hift_state_dict(hift, "legacy")
    param = {"generator." + k: v for k, v in unfold_hift_state_dict(hift, "parametrizations").items()}
    a, b = fold_hift_state_dict(hift, legacy), fold_hift_state_dict(hift, param)
    assert a.keys() == b.keys() == hift.state_dict().keys()
    for k, v in hift.state_dict().items():
        assert torch.allclose(a[k], v, atol=1e-6) and torch.equal(a[k], b[k]), k
    # torch's own weight-norm (the form upstream builds) gives the value we fold to
    conv = torch.nn.utils.parametrizations.weight_norm(torch.nn.ConvTranspose1d(4, 3, 5))
    g, v = conv.parametrizations.weight.original0, conv.parametrizations.weight.original1
    assert torch.equal(torch._weight_norm(v, g, 0), conv.weight)


def test_relative_position_pieces_follow_the_spec():
    """rel_shift picks, for query i and key j, the score of relative position i - j; the table holds
    positions T-1 .. -(T-1) with sin on even and cos on odd channels (spec §3.3)."""
    from osum_echat.token2wav.conformer import EspnetRelPositionalEncoding, RelPositionMultiHeadedAttention

    t = 6
    bd = torch.randn(1, 2, t, 2 * t - 1)
    shifted = RelPositionMultiHeadedAttention.rel_shift(bd)
    for i in range(t):
        for j in range(t):
            assert torch.equal(shifted[0, :, i, j], bd[0, :, i, t - 1 - (i - j)])
    _, pe = EspnetRelPositionalEncoding(8)(torch.zeros(1, t, 8))
    rel = torch.arange(t - 1, -t, -1, dtype=torch.float64)[:, None]
    freq = torch.exp(torch.arange(0, 8, 2, dtype=torch.float64) * -(torch.log(torch.tensor(1e4)) / 8))
    assert torch.allclose(pe[0, :, 0::2].double(), torch.sin(rel * freq), atol=1e-6)
    assert torch.allclose(pe[0, :, 1::2].double(), torch.cos(rel * freq), atol=1e-6)


def test_cosine_schedule_and_mel_lengths():
    from osum_echat.token2wav.token2wav import Token2Wav

    flow, _ = Token2Wav.build(tiny_config())
    t = flow.decoder.t_span(10, torch.zeros(1))
    expect = 1 - torch.cos(torch.linspace(0, 1, 11) * torch.pi / 2)
    assert torch.allclose(t, expect) and t[0] == 0 and abs(float(t[-1]) - 1) < 1e-6
    assert [flow.mel_frames(n) for n in (0, 1, 25, 128, 4480)] == [0, 3, 86, 441, 15435]
    assert flow.edge_frames() == 68          # 20 tokens at 25 Hz -> int(0.8 s * 22050 / 256)
