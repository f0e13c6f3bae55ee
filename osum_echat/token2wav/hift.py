"""HiFT vocoder (HiFTNet: neural source filter + iSTFT): 80-bin log-mel -> 22,050 Hz waveform (spec §4).

Module names follow `hift.pt`. Weight-normed convolutions hold the folded weight (`W = g * v / ||v||`,
computed once at load with torch's own `_weight_norm`, so the values are those upstream recomputes on every
call); `load_hift_state_dict` reads either weight-norm key form and checks the keys strictly.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from osum_echat.token2wav.config import HiFTConfig, key_mismatch
from osum_echat.token2wav.layout import conv, conv_transpose, from_cl, time_major, to_cl, wants_channels_last

WN_FORMS = {
    "parametrizations": (".parametrizations.weight.original0", ".parametrizations.weight.original1"),
    "legacy": (".weight_g", ".weight_v"),
}


class HiFTKeyError(KeyError):
    def __str__(self):
        return str(self.args[0]) if self.args else ""


class Snake(nn.Module):
    """x + 1/(alpha + 1e-9) * sin(alpha x)^2, alpha per channel (linear scale)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        alpha = self.alpha.view(1, -1, *([1] * (x.dim() - 2)))    # (B, C, T) or channels-last (B, C, 1, T)
        # in place after the first product: the same operations and roundings, one allocation instead of five
        y = torch.mul(x, alpha).sin_()
        return y.mul_(y).mul_(1.0 / (alpha + 1e-9)).add_(x)


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, dilations):
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, 1, dilation=d, padding=_padding(kernel, d))
                                    for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, 1, dilation=1, padding=_padding(kernel))
                                    for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x):
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            x = conv(c2, a2(conv(c1, a1(x)))) + x
        return x


class ConvRNNF0Predictor(nn.Module):
    def __init__(self, in_channels: int, cond_channels: int, num_class: int = 1):
        super().__init__()
        layers = []
        for i in range(5):
            layers += [nn.Conv1d(in_channels if i == 0 else cond_channels, cond_channels, 3, padding=1), nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, num_class)

    def forward(self, mel):
        if not wants_channels_last(self.classifier.weight):
            return torch.abs(self.classifier(self.condnet(mel).transpose(1, 2)).squeeze(-1))
        x = to_cl(mel)
        for layer in self.condnet:
            x = conv(layer, x) if isinstance(layer, nn.Conv1d) else layer(x)
        return torch.abs(self.classifier(time_major(x)).squeeze(-1))


class SourceModuleHnNSF(nn.Module):
    """Harmonic sines of the F0 (fundamental + nb_harmonics overtones) merged to one excitation."""

    def __init__(self, sampling_rate: int, harmonic_num: int, sine_amp: float, noise_std: float,
                 voiced_threshold: float):
        super().__init__()
        self.sampling_rate = sampling_rate
        self.harmonic_num = harmonic_num
        self.sine_amp, self.noise_std, self.voiced_threshold = sine_amp, noise_std, voiced_threshold
        self.l_linear = nn.Linear(harmonic_num + 1, 1)

    def sines(self, f0: torch.Tensor, noise: bool, phase0=None, generator=None, phase_vec=None):
        """f0 (B, 1, L) Hz -> (sines (B, H, L), cycles (B, H, L) float64 or None).

        Without `phase0`: upstream's float32 cumsum (its values, including its rounding on long inputs).
        With `phase0` (B, H, 1) float64 cycles already elapsed: the phase continues from there in float64 and
        the cumulative cycles are returned (streaming keeps the phase continuous across windows).
        """
        harmonics = self.harmonic_num + 1
        f_mat = torch.cat([f0 * (i + 1) / self.sampling_rate for i in range(harmonics)], dim=1)
        # f0 >= 0 (the predictor ends in abs), so the cycles are too and `frac` is upstream's `% 1` bit for
        # bit, at a tenth of its cost
        if phase0 is None:
            cycles = None
            theta = 2 * np.pi * torch.frac(torch.cumsum(f_mat, dim=-1))
        else:
            cycles = phase0 + torch.cumsum(f_mat.double(), dim=-1)
            theta = (2 * np.pi * torch.frac(cycles)).to(f_mat.dtype)
        if noise:
            if phase_vec is None:
                phase_vec = self.random_phases(f0.size(0), generator)
            theta = theta + phase_vec.to(theta)
        sine = self.sine_amp * torch.sin(theta)
        uv = (f0 > self.voiced_threshold).type(torch.float32)
        sine = sine * uv
        if noise:
            amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
            sine = sine + amp * torch.randn(sine.shape, generator=generator).to(sine)
        return sine, cycles

    def random_phases(self, batch: int, generator=None) -> torch.Tensor:
        """U(-pi, pi) initial phase per harmonic, 0 for the fundamental."""
        phase_vec = (torch.rand(batch, self.harmonic_num + 1, 1, generator=generator) * 2 - 1) * np.pi
        phase_vec[:, 0, :] = 0
        return phase_vec

    def forward(self, f0, noise: bool, phase0=None, generator=None, phase_vec=None):
        sine, cycles = self.sines(f0, noise, phase0, generator, phase_vec)
        merged = self.l_linear(sine.transpose(1, 2).to(self.l_linear.weight.dtype)).float()
        return torch.tanh(merged).transpose(1, 2), cycles


class HiFTGenerator(nn.Module):
    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.cfg = cfg
        self.n_fft = cfg.istft_params["n_fft"]
        self.hop = cfg.istft_params["hop_len"]
        self.upsample = int(np.prod(cfg.upsample_rates)) * self.hop
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        base = cfg.base_channels
        self.m_source = SourceModuleHnNSF(cfg.sampling_rate, cfg.nb_harmonics, cfg.nsf_alpha, cfg.nsf_sigma,
                                          cfg.nsf_voiced_threshold)
        self.conv_pre = nn.Conv1d(cfg.in_channels, base, 7, 1, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(base // 2 ** i, base // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)))
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        down_rates = np.cumprod([1] + list(cfg.upsample_rates[::-1][:-1]))[::-1]
        for i, (u, k, d) in enumerate(zip(down_rates, cfg.source_resblock_kernel_sizes,
                                          cfg.source_resblock_dilation_sizes)):
            ch = base // 2 ** (i + 1)
            u = int(u)
            self.source_downs.append(nn.Conv1d(self.n_fft + 2, ch, 1, 1) if u == 1
                                     else nn.Conv1d(self.n_fft + 2, ch, u * 2, u, padding=u // 2))
            self.source_resblocks.append(ResBlock(ch, k, d))
        self.resblocks = nn.ModuleList(
            ResBlock(base // 2 ** (i + 1), k, d)
            for i in range(len(self.ups))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes))
        self.conv_post = nn.Conv1d(base // 2 ** len(self.ups), self.n_fft + 2, 7, 1, padding=3)
        self.f0_predictor = ConvRNNF0Predictor(cfg.f0_predictor.in_channels, cfg.f0_predictor.cond_channels,
                                               cfg.f0_predictor.num_class)
        # periodic Hann computed in float64 then cast, as scipy.signal.get_window('hann', n, fftbins=True)
        self.register_buffer("stft_window", torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64)
                             .float(), persistent=False)

    def weight_norm_layers(self) -> list[str]:
        """Names of the convolutions that the checkpoint stores weight-normed (all but source_downs)."""
        names = ["conv_pre", "conv_post"] + [f"ups.{i}" for i in range(len(self.ups))]
        names += [f"f0_predictor.condnet.{i}" for i in range(0, 10, 2)]
        for prefix, blocks in (("resblocks", self.resblocks), ("source_resblocks", self.source_resblocks)):
            for b, block in enumerate(blocks):
                for j in range(len(block.convs1)):
                    names += [f"{prefix}.{b}.convs1.{j}", f"{prefix}.{b}.convs2.{j}"]
        return names

    # --- forward -------------------------------------------------------------------------------------
    def _stft(self, x):
        spec = torch.view_as_real(torch.stft(x, self.n_fft, self.hop, self.n_fft, window=self.stft_window,
                                             return_complex=True))
        return spec[..., 0], spec[..., 1]

    def _istft(self, magnitude, phase):
        magnitude = torch.clip(magnitude, max=1e2)
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        return torch.istft(spec, self.n_fft, self.hop, self.n_fft, window=self.stft_window)

    def decode(self, x: torch.Tensor, s: torch.Tensor, pause=None) -> torch.Tensor:
        """mel (B, 80, N) + source (B, 1, 256N) -> waveform (B, 256N). `pause()`, when given, is
        called between residual blocks (token2wav/batching.py lets a more urgent window run there)."""
        s_real, s_imag = self._stft(s.squeeze(1).float())
        s_stft = torch.cat([s_real, s_imag], dim=1).to(x.dtype)
        if wants_channels_last(self.conv_pre.weight):
            x, s_stft = to_cl(x), to_cl(s_stft)
        x = conv(self.conv_pre, x)
        for i, up in enumerate(self.ups):
            x = conv_transpose(up, F.leaky_relu(x, self.cfg.lrelu_slope))
            if i == len(self.ups) - 1:
                x = torch.cat([x[..., 1:2], x], dim=-1)    # reflection pad (1, 0)
            x = x + self.source_resblocks[i](conv(self.source_downs[i], s_stft))
            xs = None
            for j in range(self.num_kernels):
                y = self.resblocks[i * self.num_kernels + j](x)
                xs = y if xs is None else xs + y
                if pause is not None:
                    pause()
            x = xs / self.num_kernels
        x = conv(self.conv_post, F.leaky_relu(x))   # default slope 0.01 here, as upstream
        x = (from_cl(x) if x.dim() == 4 else x).float()
        half = self.n_fft // 2 + 1
        wav = self._istft(torch.exp(x[:, :half, :]), torch.sin(x[:, half:, :]))
        return torch.clamp(wav, -self.cfg.audio_limit, self.cfg.audio_limit)

    @torch.inference_mode()
    def source(self, mel: torch.Tensor, noise: bool = False, phase0=None, generator=None, phase_vec=None):
        """mel (B, 80, N) -> (excitation (B, 1, 256N), cumulative cycles or None)."""
        f0 = self.f0_predictor(mel.to(self.conv_pre.weight.dtype)).float()
        f0_up = F.interpolate(f0[:, None], scale_factor=float(self.upsample), mode="nearest")
        return self.m_source(f0_up, noise, phase0, generator, phase_vec)

    @torch.inference_mode()
    def inference(self, mel: torch.Tensor, noise: bool = False, generator=None) -> torch.Tensor:
        """mel (1, 80, N) float -> waveform (1, 256N) float32. noise=False zeroes the random initial phases
        and the additive source noise (deterministic)."""
        s, _ = self.source(mel, noise, None, generator)
        return self.decode(mel.to(self.conv_pre.weight.dtype), s.to(self.conv_pre.weight.dtype)).float()


# --- loading ---------------------------------------------------------------------------------------------
def hift_checkpoint_keys(model: HiFTGenerator, form: str = "legacy") -> dict[str, tuple]:
    """The `hift.pt` key -> shape map this model expects, in one weight-norm form."""
    return {k: tuple(v.shape) for k, v in unfold_hift_state_dict(model, form).items()}


def fold_hift_state_dict(model: HiFTGenerator, sd: dict, source: str = "hift.pt") -> dict:
    """Strip a leading `generator.`, fold weight norm (either form) and check keys and shapes strictly."""
    sd = {(k[len("generator."):] if k.startswith("generator.") else k): v for k, v in sd.items()}
    form = "parametrizations" if any(k.endswith(WN_FORMS["parametrizations"][0]) for k in sd) else "legacy"
    problem = key_mismatch(hift_checkpoint_keys(model, form), sd)
    if problem:
        raise HiFTKeyError(f"{source}: does not match this HiFT config ({form} weight-norm form): {problem}")
    g_suffix, v_suffix = WN_FORMS[form]
    out = {}
    for key, value in sd.items():
        if key.endswith(g_suffix):
            layer = key[: -len(g_suffix)]
            out[layer + ".weight"] = torch._weight_norm(sd[layer + v_suffix], value, 0)
        elif not key.endswith(v_suffix):
            out[key] = value
    return out


def unfold_hift_state_dict(model: HiFTGenerator, form: str = "legacy") -> dict:
    """The model's weights in checkpoint form (g = ||W|| per output row, v = W), for writing a hift.pt."""
    g_suffix, v_suffix = WN_FORMS[form]
    wn = set(model.weight_norm_layers())
    out = {}
    for name, p in model.state_dict().items():
        layer, _, leaf = name.rpartition(".")
        if leaf == "weight" and layer in wn:
            out[layer + g_suffix] = torch.norm_except_dim(p, 2, 0).clone()
            out[layer + v_suffix] = p.clone()
        else:
            out[name] = p.clone()
    return out

