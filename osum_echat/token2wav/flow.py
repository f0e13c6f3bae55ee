"""CosyVoice-300M-25Hz flow: speech tokens (+ speaker prompt) -> 80-bin log-mel by conditional flow matching.

`MaskedDiffWithXvec` keeps upstream's module names so `flow.pt` loads strictly. Batch size 1, as upstream's
inference. The algorithm (spec §3) is reproduced step by step so that, with the same initial noise, the mel
equals upstream's to float32 rounding.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from osum_echat.token2wav.config import CFMConfig, FlowConfig, RegulatorConfig
from osum_echat.token2wav.conformer import ConformerEncoder
from osum_echat.token2wav.estimator import ConditionalDecoder

# Upstream regulates the first and last 20 generated tokens separately when there are more than 40, so the
# head/tail mel frames do not move with the utterance length (a clean seam for its streaming overlap).
EDGE_TOKENS = 20


class InterpolateRegulator(nn.Module):
    def __init__(self, cfg: RegulatorConfig):
        super().__init__()
        layers = []
        for _ in cfg.sampling_ratios:
            layers += [nn.Conv1d(cfg.channels, cfg.channels, 3, 1, 1), nn.GroupNorm(cfg.groups, cfg.channels), nn.Mish()]
        layers.append(nn.Conv1d(cfg.channels, cfg.out_channels or cfg.channels, 1, 1))
        self.model = nn.Sequential(*layers)

    @staticmethod
    def _interp(x: torch.Tensor, size: int) -> torch.Tensor:
        return F.interpolate(x.transpose(1, 2).contiguous(), size=size, mode="linear")

    def inference(self, h_prompt: torch.Tensor, h_gen: torch.Tensor, mel_len1: int, mel_len2: int,
                  edge_frames: int) -> torch.Tensor:
        """h_* (1, T, C) -> mu (1, C, mel_len1 + mel_len2); each part stretched on its own (spec §3.6)."""
        if h_gen.shape[1] > 2 * EDGE_TOKENS:
            parts = [self._interp(h_gen[:, :EDGE_TOKENS], edge_frames),
                     self._interp(h_gen[:, EDGE_TOKENS:-EDGE_TOKENS], mel_len2 - 2 * edge_frames),
                     self._interp(h_gen[:, -EDGE_TOKENS:], edge_frames)]
            gen = torch.cat(parts, dim=2)
        else:
            gen = self._interp(h_gen, mel_len2)
        x = torch.cat([self._interp(h_prompt, mel_len1), gen], dim=2) if h_prompt.shape[1] else gen
        return self.model(x)


class ConditionalCFM(nn.Module):
    """Euler ODE solver of the flow-matching model; classifier-free guidance as one batch of 2."""

    def __init__(self, cfm: CFMConfig, estimator: nn.Module, mel_dim: int):
        super().__init__()
        self.cfm = cfm
        self.mel_dim = mel_dim
        self.estimator = estimator
        # set by Token2Wav.use_estimator("onnx"): a plain attribute, so flow.pt's keys are unchanged
        self.runner = None

    def t_span(self, n_timesteps: int, like: torch.Tensor) -> torch.Tensor:
        t = torch.linspace(0, 1, n_timesteps + 1, device=like.device, dtype=like.dtype)
        if self.cfm.t_scheduler == "cosine":
            t = 1 - torch.cos(t * 0.5 * torch.pi)
        return t

    @torch.inference_mode()
    def solve(self, z: torch.Tensor, mu: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor,
              n_timesteps: int, between_steps=None) -> torch.Tensor:
        """z, mu, cond (B, 80, M); spks (B, 80) -> x(1) (B, 80, M) float32 (B utterances of one length:
        streamed windows of several sessions, token2wav/batching.py). `between_steps()` is called
        between two estimator passes (batching.py lets a more urgent window run there).

        The ODE state and the schedule stay float32; a bf16 estimator only sees its inputs cast."""
        z, mu, spks, cond = z.float(), mu.float(), spks.float(), cond.float()
        estimator = self.runner or self.estimator
        est_dtype = self.runner.dtype if self.runner else next(self.estimator.parameters()).dtype
        t_span = self.t_span(n_timesteps, mu)
        rate = self.cfm.inference_cfg_rate
        x, t, dt = z, t_span[0], t_span[1] - t_span[0]
        b = x.shape[0]
        # the unconditional rows (b..2b-1) see zero mu / speaker / prompt condition
        mu_in = torch.cat([mu, torch.zeros_like(mu)]).to(est_dtype)
        spks_in = torch.cat([spks, torch.zeros_like(spks)]).to(est_dtype)
        cond_in = torch.cat([cond, torch.zeros_like(cond)]).to(est_dtype)
        for step in range(1, len(t_span)):
            v = estimator(x.repeat(2, 1, 1).to(est_dtype), None, mu_in, t.expand(2 * b).to(est_dtype),
                               spks_in, cond_in).float()
            v_cond, v_uncond = v[:b], v[b:]
            x = x + dt * ((1.0 + rate) * v_cond - rate * v_uncond)
            t = t + dt
            if step < len(t_span) - 1:
                dt = t_span[step + 1] - t
                if between_steps is not None:
                    between_steps()
        return x.float()


class MaskedDiffWithXvec(nn.Module):
    def __init__(self, cfg: FlowConfig, sample_rate: int = 22050, mel_hop: int = 256):
        super().__init__()
        self.cfg = cfg
        self.sample_rate, self.mel_hop = sample_rate, mel_hop
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.output_size)
        self.encoder = ConformerEncoder(cfg.encoder)
        self.encoder_proj = nn.Linear(cfg.encoder.output_size, cfg.output_size)
        self.length_regulator = InterpolateRegulator(cfg.length_regulator)
        self.decoder = ConditionalCFM(cfg.cfm, ConditionalDecoder(cfg.estimator), cfg.output_size)

    @property
    def dtype(self) -> torch.dtype:
        return self.input_embedding.weight.dtype

    def mel_frames(self, n_tokens: int) -> int:
        """floor(n * sr / (rate * hop)) in integers. (Upstream's int(n / 25 * 22050 / 256) in floats agrees
        below 4,480 tokens and is one frame short at some longer lengths.)"""
        return n_tokens * self.sample_rate // (self.cfg.input_frame_rate * self.mel_hop)

    def edge_frames(self) -> int:
        return int(EDGE_TOKENS / self.cfg.input_frame_rate * self.sample_rate / self.mel_hop)

    def speaker(self, embedding: torch.Tensor) -> torch.Tensor:
        """x-vector (1, 192) -> (1, 80): L2-normalised, then the affine layer."""
        return self.spk_embed_affine_layer(F.normalize(embedding.to(self.dtype), dim=1))

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(1, T) ids (prompt first) -> (1, T, 80)."""
        x = self.input_embedding(torch.clamp(tokens, min=0))
        return self.encoder_proj(self.encoder(x))

    def mu(self, h: torch.Tensor, n_prompt: int, mel_len1: int, mel_len2: int) -> torch.Tensor:
        return self.length_regulator.inference(h[:, :n_prompt], h[:, n_prompt:], mel_len1, mel_len2,
                                               self.edge_frames())

    @torch.inference_mode()
    def inference(self, token: torch.Tensor, prompt_token: torch.Tensor, prompt_feat: torch.Tensor,
                  embedding: torch.Tensor, noise: torch.Tensor | None = None,
                  n_timesteps: int | None = None) -> torch.Tensor:
        """token (1, T2), prompt_token (1, T1), prompt_feat (1, M1, 80), embedding (1, 192) -> mel (1, 80, M2).

        `noise` (1, 80, M1 + M2) is the ODE's starting point; None means zeros (deterministic mode).
        """
        if token.shape[0] != 1:
            raise ValueError("flow inference takes one utterance (batch size 1)")
        n_timesteps = n_timesteps or self.cfg.cfm.n_timesteps
        spks = self.speaker(embedding)
        n_prompt = prompt_token.shape[1]
        h = self.encode(torch.cat([prompt_token, token], dim=1).long())
        mel_len1, mel_len2 = prompt_feat.shape[1], self.mel_frames(token.shape[1])
        mu = self.mu(h, n_prompt, mel_len1, mel_len2).float()
        cond = torch.zeros_like(mu)
        cond[:, :, :mel_len1] = prompt_feat.to(mu.dtype).transpose(1, 2)
        z = torch.zeros_like(mu) if noise is None else noise.to(mu.dtype)
        feat = self.decoder.solve(z, mu, spks, cond, n_timesteps)
        return feat[:, :, mel_len1:]

