"""Streaming token2wav: audio packets while speech tokens are still arriving.

Flow windows. Tokens are rendered in windows [a, b): the first after `first_chunk` tokens, then every `hop`
tokens (growing x`hop_growth` up to `max_hop`: later windows amortise the re-encoded context). Mel frames are
addressed absolutely, token n ending at frame floor(n * 22050 / (25 * 256)), so the streamed mel has exactly
the whole-utterance length (upstream rounds each chunk on its own and drifts). Each window re-encodes `context`
already-rendered tokens at its left; their finalised mel is given to the ODE as condition (the way the prompt
mel is), so the new frames continue the audio already sent instead of restarting. The initial noise is drawn
per absolute frame and reused by every window that covers the frame (the flow's noise cache). The last
`overlap` tokens' frames of a window are held back and cross-faded into the next window's version of them
with complementary raised-cosine weights that sum to exactly 1 (upstream's two Hamming halves sum to ~1.08).

Vocoder windows. HiFT runs on finalised mel with `vocoder_context` frames of left context and holds back
`vocoder_lookahead` frames until their right context has arrived, so emitted samples see (almost) the same
receptive field as in a whole-utterance render and no cross-fade is needed. The harmonic source keeps its
phase across windows: the cycles elapsed up to each frame are carried in float64 (upstream instead overwrites
the head of each new source with cached samples).

Upstream's own streaming branch (OSUM-EChat cli/model.py) replaces the tokens with a hard-coded debug list;
CosyVoice v1 waits for 70 tokens (2.8 s of speech) before its first packet. Defaults here come from the
measurement in bench/bench_token2wav.py (streamed vs whole log-mel L1 per first-chunk size).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch


@dataclass
class StreamConfig:
    first_chunk: int = 10       # tokens in the first flow window (the first packet waits for these)
    hop: int = 15               # tokens per later window: 15, 30, 60, 100, 100, ...
    max_hop: int = 100
    hop_growth: float = 2.0
    overlap: int = 5            # tokens whose mel is held back and cross-faded with the next window
    context: int = 20           # rendered tokens re-encoded at the left of each window (>= overlap)
    # full-size HiFT in 20-frame pushes vs whole: 16/8 frames still differ (max 1.9), 24/12 give max 3e-4
    vocoder_context: int = 24   # mel frames of left context per HiFT window
    vocoder_lookahead: int = 12  # mel frames held back until their right context arrives

    def __post_init__(self):
        if self.first_chunk < 1 or self.hop < 1 or self.max_hop < self.hop:
            raise ValueError(f"stream: need first_chunk >= 1 and 1 <= hop <= max_hop, got {self}")
        if not 0 <= self.overlap <= self.context:
            raise ValueError(f"stream: need 0 <= overlap <= context, got {self}")
        if self.overlap >= min(self.first_chunk, self.hop) and self.overlap:
            raise ValueError(f"stream: overlap ({self.overlap}) must be smaller than first_chunk and hop")


def window_ends(conf: StreamConfig):
    """How many codes each window of a stream waits for: first_chunk, then every hop (growing)."""
    end, hop = conf.first_chunk, conf.hop
    while True:
        yield end
        end += hop
        hop = min(conf.max_hop, int(hop * conf.hop_growth))


def crossfade(held: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Blend the first held.shape[-1] frames of `new` with `held`: sin^2 fade-in, cos^2 fade-out (sum 1)."""
    n = held.shape[-1]
    if n == 0:
        return new
    w = torch.sin(0.5 * math.pi * (torch.arange(n, device=new.device, dtype=torch.float32) + 0.5) / n) ** 2
    w = w.to(new.dtype)
    out = new.clone()
    out[..., :n] = new[..., :n] * w + held * (1 - w)
    return out


class _VocoderStream:
    """HiFT over finalised mel frames, windowed, with the source phase carried across windows."""

    def __init__(self, t2w, conf: StreamConfig, noise: bool, generator):
        self.hift, self.hop = t2w.hift, t2w.mel_hop
        self.conf, self.noise, self.generator = conf, noise, generator
        self.mel = None
        self.emitted = 0
        harmonics = self.hift.m_source.harmonic_num + 1
        device = self.hift.conv_pre.weight.device
        self.phase_at = torch.zeros(1, harmonics, 1, dtype=torch.float64, device=device)  # cycles at frame k
        self.phase_vec = self.hift.m_source.random_phases(1, generator) if noise else None

    @torch.inference_mode()
    def push(self, new_mel: torch.Tensor, final: bool, pause=None):
        self.mel = new_mel if self.mel is None else torch.cat([self.mel, new_mel], dim=-1)
        total = self.mel.shape[-1]
        end = total if final else total - self.conf.vocoder_lookahead
        if end <= self.emitted:
            return None
        start = max(0, self.emitted - self.conf.vocoder_context)
        window = self.mel[:, :, start:].to(self.hift.conv_pre.weight)
        s, cycles = self.hift.source(window, self.noise, self.phase_at[:, :, start:start + 1], self.generator,
                                     self.phase_vec)
        wav = self.hift.decode(window, s.to(window.dtype), pause).float()[0]
        # cycles elapsed at each newly emitted frame boundary, measured inside this window's interior
        cyc = torch.cat([self.phase_at[:, :, start:start + 1], cycles], dim=-1)
        idx = torch.arange(self.emitted + 1, end + 1, device=cyc.device) - start
        base = cyc[:, :, (self.emitted - start) * self.hop]
        gained = cyc[:, :, idx * self.hop] - base.unsqueeze(-1)
        self.phase_at = torch.cat([self.phase_at, self.phase_at[:, :, self.emitted:self.emitted + 1] + gained], -1)
        out = wav[(self.emitted - start) * self.hop:(end - start) * self.hop]
        self.emitted = end
        return out.cpu()


def stream_tokens(t2w, tokens_iterable, prompt, noise: bool, conf: StreamConfig, n_timesteps=None,
                  generator=None, mel_out: list | None = None, solver=None, gate=None):
    """The generator behind Token2Wav.stream (see the module docstring). `solver(z, mu, spks, cond,
    steps)`: the flow's ODE solve of a window (default `flow.decoder.solve`); `gate()`: a context
    manager held around the rest of each window's work, before and after the solve (never around
    it), giving a `pause()` the vocoder calls between its blocks (or None). batching.SolveBatcher gives both: concurrent streams' windows by deadline, aligned ODEs
    together."""
    flow = t2w.flow
    solve = solver or flow.decoder.solve
    gate = gate or contextlib.nullcontext
    vocab = t2w.cfg.flow.vocab_size
    steps = n_timesteps or t2w.cfg.flow.cfm.n_timesteps
    ptok, pmel, spk = t2w.prompt_tensors(prompt)
    with torch.inference_mode():
        spks = flow.speaker(spk)                          # the prompt's work done once per stream
        prompt_cond = pmel.transpose(1, 2).float()
    n_prompt_frames = pmel.shape[1]
    z_prompt = t2w.noise(n_prompt_frames, generator) if noise else None
    state = dict(z=None, final=prompt_cond[:, :, :0], held=None, done=0)
    voc = _VocoderStream(t2w, conf, noise, generator)
    received: list[int] = []

    def run(b: int, last: bool):
        done, final, held = state["done"], state["final"], state["held"]
        a = max(0, done - conf.context)
        fa, fb, e = flow.mel_frames(a), flow.mel_frames(b), final.shape[-1]
        with gate(), torch.inference_mode():
            tokens = torch.cat([ptok, torch.tensor([received[a:b]], device=ptok.device)], dim=1)
            mu = flow.mu(flow.encode(tokens), ptok.shape[1], n_prompt_frames, fb - fa).float()
            cond = torch.zeros_like(mu)
            cond[:, :, :n_prompt_frames] = prompt_cond
            cond[:, :, n_prompt_frames:n_prompt_frames + e - fa] = final[:, :, fa:e]
            if noise:
                z = state["z"]
                if z is None or z.shape[-1] < fb:
                    extra = t2w.noise(fb - (0 if z is None else z.shape[-1]), generator)
                    z = extra if z is None else torch.cat([z, extra], dim=-1)
                    state["z"] = z
                z_win = torch.cat([z_prompt, z[:, :, fa:fb]], dim=-1)
            else:
                z_win = torch.zeros_like(mu)
        with torch.inference_mode():
            x = solve(z_win, mu, spks, cond, steps)
        with gate() as pause, torch.inference_mode():
            new = x[:, :, n_prompt_frames + e - fa:]
            if held is not None:
                new = crossfade(held, new)
            cut = new.shape[-1] if last else flow.mel_frames(b - conf.overlap) - e
            ready, state["held"] = new[:, :, :cut], (None if last else new[:, :, cut:])
            state["final"] = torch.cat([final, ready], dim=-1)
            state["done"] = b
            if mel_out is not None:
                mel_out.append(ready[0].float().cpu())
            return voc.push(ready.float(), final=last, pause=pause)

    ends = window_ends(conf)
    next_b = next(ends)
    for tok in tokens_iterable:
        tok = int(tok)
        if tok == vocab:      # the LLM's end of speech: the stream is complete
            break
        if not 0 <= tok < vocab:
            raise ValueError(f"speech token at position {len(received)} is {tok}: ids must lie in [0, {vocab})")
        received.append(tok)
        if len(received) == next_b:
            out = run(next_b, last=False)
            if out is not None and out.numel():
                yield out
            next_b = next(ends)
    if not received:
        raise ValueError("no speech tokens to render (the stream ended before its first token)")
    if len(received) > state["done"]:
        out = run(len(received), last=True)
    else:   # the stream ended exactly at a window boundary: the held frames are final as they are
        held = state["held"] if state["held"] is not None else state["final"][:, :, :0]
        if mel_out is not None:
            mel_out.append(held[0].float().cpu())
        with gate() as pause:
            out = voc.push(held.float(), final=True, pause=pause)
    if out is not None and out.numel():
        yield out
