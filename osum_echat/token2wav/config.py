"""Read a released CosyVoice-300M-25Hz `cosyvoice.yaml` into typed configs (sizes of the flow and HiFT).

The HyperPyYAML tags are parsed inertly by `hyperpyyaml.load_hyperpyyaml_inert`: nothing named in the
file is imported or run. Defaults are the CosyVoice-300M-25Hz values (spec §1).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from osum_echat.token2wav.hyperpyyaml import Node, Token2WavConfigError, load_hyperpyyaml_inert

__all__ = ["Node", "Token2WavConfigError", "load_hyperpyyaml_inert", "Token2WavConfig", "load_config",
           "parse_config", "tiny_config", "config_to_yaml", "key_mismatch"]


def key_mismatch(expected: dict, state_dict: dict) -> str | None:
    """None when `state_dict` has exactly the keys and shapes of `expected` (name -> shape), else a summary."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict) if tuple(state_dict[k].shape) != tuple(expected[k]))
    if not (missing or unexpected or wrong):
        return None
    return (f"{len(missing)} missing {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}, {len(wrong)} "
            f"wrong shape {[(k, tuple(state_dict[k].shape), tuple(expected[k])) for k in wrong[:5]]}")


# ----------------------------------------------------------------------------------------------------
# Typed configs. Defaults are the CosyVoice-300M-25Hz values (spec §1); the yaml overrides them.

@dataclass
class EncoderConfig:
    input_size: int = 512
    output_size: int = 512
    attention_heads: int = 8
    linear_units: int = 2048
    num_blocks: int = 6
    input_layer: str = "linear"
    pos_enc_layer_type: str = "rel_pos_espnet"
    selfattention_layer_type: str = "rel_selfattn"
    normalize_before: bool = True
    use_cnn_module: bool = False
    macaron_style: bool = False
    activation_type: str = "swish"
    static_chunk_size: int = 0
    use_dynamic_chunk: bool = False


@dataclass
class RegulatorConfig:
    channels: int = 80
    sampling_ratios: tuple = (1, 1, 1, 1)
    out_channels: int | None = None
    groups: int = 1


@dataclass
class CFMConfig:
    sigma_min: float = 1e-6
    solver: str = "euler"
    t_scheduler: str = "cosine"
    inference_cfg_rate: float = 0.7
    training_cfg_rate: float = 0.2
    reg_loss_type: str = "l1"
    n_timesteps: int = 10        # hard-coded in upstream's MaskedDiffWithXvec.inference


@dataclass
class EstimatorConfig:
    in_channels: int = 320
    out_channels: int = 80
    channels: tuple = (256, 256)
    dropout: float = 0.0
    attention_head_dim: int = 64
    n_blocks: int = 4
    num_mid_blocks: int = 12
    num_heads: int = 8
    act_fn: str = "gelu"
    causal: bool = False


@dataclass
class FlowConfig:
    input_size: int = 512
    output_size: int = 80
    spk_embed_dim: int = 192
    vocab_size: int = 4096
    input_frame_rate: int = 25
    output_type: str = "mel"
    only_mask_loss: bool = True
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    length_regulator: RegulatorConfig = field(default_factory=RegulatorConfig)
    cfm: CFMConfig = field(default_factory=CFMConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)


@dataclass
class F0Config:
    num_class: int = 1
    in_channels: int = 80
    cond_channels: int = 512


@dataclass
class HiFTConfig:
    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 22050
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10
    upsample_rates: tuple = (8, 8)
    upsample_kernel_sizes: tuple = (16, 16)
    istft_params: dict = field(default_factory=lambda: {"n_fft": 16, "hop_len": 4})
    resblock_kernel_sizes: tuple = (3, 7, 11)
    resblock_dilation_sizes: tuple = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple = (7, 11)
    source_resblock_dilation_sizes: tuple = ((1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_predictor: F0Config = field(default_factory=F0Config)


@dataclass
class Token2WavConfig:
    sample_rate: int = 22050
    flow: FlowConfig = field(default_factory=FlowConfig)
    hift: HiFTConfig = field(default_factory=HiFTConfig)

    @property
    def mel_hop(self) -> int:
        """Samples per mel frame: HiFT's total upsampling (8*8*4 = 256 at full size)."""
        h = self.hift
        rate = h.istft_params["hop_len"]
        for r in h.upsample_rates:
            rate *= r
        return rate

    def mel_frames(self, n_tokens: int) -> int:
        """Mel frames for n tokens, as upstream: int(n / frame_rate * 22050 / 256)."""
        return int(n_tokens / self.flow.input_frame_rate * self.sample_rate / self.mel_hop)


# The classes each subtree may name (last dotted component); anything else is an error.
_CLASSES = {
    "flow": "MaskedDiffWithXvec", "encoder": "ConformerEncoder", "length_regulator": "InterpolateRegulator",
    "decoder": "ConditionalCFM", "estimator": "ConditionalDecoder", "cfm_params": "DictConfig",
    "hift": "HiFTGenerator", "f0_predictor": "ConvRNNF0Predictor",
}
# Constructor arguments that are not sizes (dropout rates, bookkeeping) and are accepted silently.
_IGNORED = {"dropout_rate", "positional_dropout_rate", "attention_dropout_rate", "use_dynamic_left_chunk",
            "in_channels", "n_spks", "spk_emb_dim", "decoder_conf", "mel_feat_conf", "gradient_checkpointing",
            "global_cmvn", "cnn_module_kernel", "causal", "cnn_module_norm", "key_bias"}


def _fill(dc_cls, node, where: str, path: Path, nested: dict | None = None):
    """Build dataclass `dc_cls` from a `!new:` node's kwargs (or a plain dict), checking the class name."""
    if isinstance(node, Node):
        expect = _CLASSES[where.rsplit(".", 1)[-1]]
        if node.kind != "new" or node.cls != expect:
            raise Token2WavConfigError(
                f"{path}: '{where}' is '!{node.kind}:{node.target}'; this token2wav builds only "
                f"'!new:...{expect}' there (CosyVoice-300M-25Hz). Unknown class: {node.target}")
        kwargs = node.kwargs
    elif isinstance(node, dict):
        kwargs = node
    else:
        raise Token2WavConfigError(f"{path}: '{where}' must be a mapping or a !new: entry, got {node!r}")
    names = {f.name for f in fields(dc_cls)}
    values = {}
    for key, value in kwargs.items():
        if nested and key in nested:
            continue
        if key in names:
            if isinstance(value, Node):
                raise Token2WavConfigError(f"{path}: '{where}.{key}' is an unresolved '!{value.kind}' "
                                           f"({value.target}); write the value")
            values[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value) \
                if isinstance(value, list) else value
        elif key not in _IGNORED:
            raise Token2WavConfigError(f"{path}: '{where}.{key}' is not a known {dc_cls.__name__} option")
    return values


def _flow_config(node, path: Path) -> FlowConfig:
    sub = {"encoder", "length_regulator", "decoder"}
    values = _fill(FlowConfig, node, "flow", path, nested=sub)
    kw = node.kwargs if isinstance(node, Node) else node
    for key in sub:
        if key not in kw:
            raise Token2WavConfigError(f"{path}: 'flow.{key}' is missing")
    enc = EncoderConfig(**_fill(EncoderConfig, kw["encoder"], "flow.encoder", path))
    reg = RegulatorConfig(**_fill(RegulatorConfig, kw["length_regulator"], "flow.length_regulator", path))
    dec = kw["decoder"]
    if not (isinstance(dec, Node) and dec.kind == "new" and dec.cls == "ConditionalCFM"):
        what = f"!{dec.kind}:{dec.target}" if isinstance(dec, Node) else repr(dec)
        raise Token2WavConfigError(f"{path}: 'flow.decoder' is '{what}'; expected '!new:...ConditionalCFM'. "
                                   f"Unknown class")
    for key in ("cfm_params", "estimator"):
        if key not in dec.kwargs:
            raise Token2WavConfigError(f"{path}: 'flow.decoder.{key}' is missing")
    cfm_node = dec.kwargs["cfm_params"]
    if isinstance(cfm_node, Node) and cfm_node.cls == "DictConfig":
        cfm_node = cfm_node.kwargs.get("content", cfm_node.kwargs)
    cfm = CFMConfig(**_fill(CFMConfig, cfm_node, "flow.decoder.cfm_params", path))
    est = EstimatorConfig(**_fill(EstimatorConfig, dec.kwargs["estimator"], "flow.decoder.estimator", path))
    cfg = FlowConfig(**values, encoder=enc, length_regulator=reg, cfm=cfm, estimator=est)
    _check_flow(cfg, path)
    return cfg


def _check_flow(cfg: FlowConfig, path: Path) -> None:
    enc, est = cfg.encoder, cfg.estimator
    supported = dict(input_layer="linear", pos_enc_layer_type="rel_pos_espnet",
                     selfattention_layer_type="rel_selfattn", use_cnn_module=False, macaron_style=False,
                     activation_type="swish", normalize_before=True, use_dynamic_chunk=False, static_chunk_size=0)
    for key, want in supported.items():
        if getattr(enc, key) != want:
            raise Token2WavConfigError(f"{path}: flow.encoder.{key}={getattr(enc, key)!r} is not supported "
                                       f"(CosyVoice-300M-25Hz uses {want!r})")
    checks = [
        (cfg.cfm.solver == "euler", "flow.decoder.cfm_params.solver must be 'euler'"),
        (cfg.cfm.t_scheduler in ("cosine", "linear"), "flow.decoder.cfm_params.t_scheduler must be cosine|linear"),
        (est.act_fn == "gelu", "flow.decoder.estimator.act_fn must be 'gelu'"),
        (not est.causal, "flow.decoder.estimator.causal must be False (CosyVoice 2 is not this model)"),
        (est.in_channels == 4 * cfg.output_size, "flow.decoder.estimator.in_channels must be 4 x output_size"),
        (cfg.output_size == cfg.length_regulator.channels, "flow.length_regulator.channels must equal output_size"),
        (enc.input_size == cfg.input_size, "flow.encoder.input_size must equal flow.input_size"),
        (all(c % 8 == 0 for c in est.channels), "flow.decoder.estimator.channels must be multiples of 8"),
        (len(est.channels) >= 1, "flow.decoder.estimator.channels must not be empty"),
        (enc.output_size % enc.attention_heads == 0, "flow.encoder.output_size must divide by attention_heads"),
    ]
    for ok, msg in checks:
        if not ok:
            raise Token2WavConfigError(f"{path}: {msg}")


def _hift_config(node, path: Path) -> HiFTConfig:
    values = _fill(HiFTConfig, node, "hift", path, nested={"f0_predictor"})
    kw = node.kwargs if isinstance(node, Node) else node
    if "f0_predictor" not in kw:
        raise Token2WavConfigError(f"{path}: 'hift.f0_predictor' is missing")
    f0 = F0Config(**_fill(F0Config, kw["f0_predictor"], "hift.f0_predictor", path))
    if "istft_params" in values:
        values["istft_params"] = dict(values["istft_params"])
    cfg = HiFTConfig(**values, f0_predictor=f0)
    n_up = len(cfg.upsample_rates)
    if cfg.base_channels % (2 ** n_up):
        raise Token2WavConfigError(f"{path}: hift.base_channels must divide by 2**len(upsample_rates)")
    if len(cfg.source_resblock_kernel_sizes) != n_up or len(cfg.upsample_kernel_sizes) != n_up:
        raise Token2WavConfigError(f"{path}: hift source_resblock_kernel_sizes / upsample_kernel_sizes "
                                   f"need one entry per upsample rate")
    if f0.num_class != 1:
        raise Token2WavConfigError(f"{path}: hift.f0_predictor.num_class must be 1")
    return cfg


def parse_config(data: dict, path: str | Path = "<dict>") -> Token2WavConfig:
    """Typed config from a loaded (inert) yaml mapping that has `flow` and `hift` entries."""
    path = Path(path)
    for key in ("flow", "hift"):
        if key not in data:
            raise Token2WavConfigError(f"{path}: no '{key}' entry (not a CosyVoice model yaml?)")
    cfg = Token2WavConfig(sample_rate=int(data.get("sample_rate", 22050)),
                          flow=_flow_config(data["flow"], path), hift=_hift_config(data["hift"], path))
    if cfg.hift.sampling_rate != cfg.sample_rate:
        raise Token2WavConfigError(f"{path}: hift.sampling_rate {cfg.hift.sampling_rate} != sample_rate "
                                   f"{cfg.sample_rate}")
    if cfg.hift.in_channels != cfg.flow.output_size:
        raise Token2WavConfigError(f"{path}: hift.in_channels must equal flow.output_size")
    return cfg


def load_config(path: str | Path) -> Token2WavConfig:
    """Typed Token2WavConfig from a released (or tiny) cosyvoice.yaml."""
    return parse_config(load_hyperpyyaml_inert(path), path)


def tiny_config() -> Token2WavConfig:
    """Same architecture at test size (spec §8): sub-second synthesis on a CPU."""
    cfg = Token2WavConfig()
    f = cfg.flow
    f.input_size = 32
    f.encoder = EncoderConfig(input_size=32, output_size=32, attention_heads=2, linear_units=64, num_blocks=1)
    f.estimator = EstimatorConfig(channels=(32, 32), attention_head_dim=16, num_heads=2, n_blocks=1,
                                  num_mid_blocks=1)
    h = cfg.hift
    h.base_channels = 32
    h.f0_predictor = F0Config(cond_channels=16)
    h.resblock_kernel_sizes, h.resblock_dilation_sizes = (3,), ((1,),)
    h.source_resblock_dilation_sizes = ((1,), (1,))
    return cfg


def _yaml_value(v) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return f"'{v}'"
    return repr(v)


def _yaml_block(lines: list, obj, indent: int, skip=()) -> None:
    pad = " " * indent
    for f in fields(obj):
        if f.name in skip:
            continue
        value = getattr(obj, f.name)
        if isinstance(value, dict):
            lines.append(f"{pad}{f.name}:")
            lines += [f"{pad}    {k}: {_yaml_value(v)}" for k, v in value.items()]
        else:
            lines.append(f"{pad}{f.name}: {_yaml_value(value)}")


def config_to_yaml(cfg: Token2WavConfig) -> str:
    """The flow/hift part of a cosyvoice.yaml in the released HyperPyYAML layout (readable by upstream)."""
    f, h = cfg.flow, cfg.hift
    lines = ["# CosyVoice-300M-25Hz layout (flow + hift only); written by osum_echat.token2wav",
             f"sample_rate: {cfg.sample_rate}", "spk_embed_dim: 192", "",
             "flow: !new:cosyvoice.flow.flow.MaskedDiffWithXvec"]
    _yaml_block(lines, f, 4, skip=("encoder", "length_regulator", "cfm", "estimator", "spk_embed_dim"))
    lines.append("    spk_embed_dim: !ref <spk_embed_dim>")
    lines.append("    encoder: !new:cosyvoice.transformer.encoder.ConformerEncoder")
    _yaml_block(lines, f.encoder, 8)
    lines.append("    length_regulator: !new:cosyvoice.flow.length_regulator.InterpolateRegulator")
    _yaml_block(lines, f.length_regulator, 8, skip=("out_channels",))
    lines += ["    decoder: !new:cosyvoice.flow.flow_matching.ConditionalCFM",
              f"        in_channels: {3 * f.output_size}", "        n_spks: 1", f"        spk_emb_dim: {f.output_size}",
              "        cfm_params: !new:omegaconf.DictConfig", "            content:"]
    _yaml_block(lines, f.cfm, 16, skip=("n_timesteps",))
    lines.append("        estimator: !new:cosyvoice.flow.decoder.ConditionalDecoder")
    _yaml_block(lines, f.estimator, 12, skip=("causal",))
    lines += ["", "hift: !new:cosyvoice.hifigan.generator.HiFTGenerator"]
    _yaml_block(lines, h, 4, skip=("f0_predictor", "sampling_rate"))
    lines.append("    sampling_rate: !ref <sample_rate>")
    lines.append("    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor")
    _yaml_block(lines, h.f0_predictor, 8)
    lines += ["", "# not used by token2wav; kept so the file reads like the released one",
              "feat_extractor: !name:matcha.utils.audio.mel_spectrogram", "    n_fft: 1024", "    num_mels: 80",
              "    sampling_rate: !ref <sample_rate>", "    hop_size: 256", "    win_size: 1024", "    fmin: 0",
              "    fmax: 8000", "    center: False",
              "__set_seed1: !apply:random.seed [1986]", ""]
    return "\n".join(lines)
