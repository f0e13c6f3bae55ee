"""Token2Wav: CosyVoice-300M-25Hz speech tokens -> 22,050 Hz waveform, whole or streamed.

    t2w = Token2Wav.from_dir("CosyVoice-300M-25Hz")            # cosyvoice.yaml + flow.pt + hift.pt
    wav = t2w.synthesize(tokens, prompt=t2w.prompt_from_wav("prompt.wav"), noise=False)
    for chunk in t2w.stream(token_iterator): ...

The directory is read as released (llm.pt is never touched); campplus.onnx / speech_tokenizer_v1.onnx are
opened only when a prompt wav is given.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from osum_echat.token2wav.config import (Token2WavConfig, key_mismatch, load_config, load_hyperpyyaml_inert,
                                         parse_config)
from osum_echat.token2wav.flow import MaskedDiffWithXvec
from osum_echat.token2wav.frontend import check_token_range
from osum_echat.token2wav.hift import HiFTGenerator, HiFTKeyError, fold_hift_state_dict
from osum_echat.utils import get_logger

log = get_logger(__name__)
CONFIG_FILE, FLOW_FILE, HIFT_FILE = "cosyvoice.yaml", "flow.pt", "hift.pt"
MAX_PROMPT_SECONDS = 30


class ModelDirError(FileNotFoundError):
    pass


def clean_tokens(tokens, vocab_size: int) -> list[int]:
    """Speech ids ready for the flow: trailing LLM end-of-speech ids (== vocab_size, OSUM-EChat's 4096) removed
    as upstream does, then every id checked to lie in [0, vocab_size)."""
    ids = [int(t) for t in (tokens.tolist() if isinstance(tokens, (torch.Tensor, np.ndarray)) else tokens)]
    while ids and ids[-1] == vocab_size:
        ids.pop()
    if not ids:
        raise ValueError("no speech tokens to render (the list is empty after removing the end-of-speech id "
                         f"{vocab_size})")
    for pos, tok in enumerate(ids):
        if not 0 <= tok < vocab_size:
            raise ValueError(f"speech token at position {pos} is {tok}: ids must lie in [0, {vocab_size})")
    return ids


def _load_state(path: Path) -> dict:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (any unreadable file is one clear error)
        raise ModelDirError(f"{path}: not a readable torch state_dict ({type(e).__name__}: {e})") from e
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelDirError(f"{path}: expected a plain state_dict (name -> tensor)")
    return sd


def load_flow_state_dict(flow: MaskedDiffWithXvec, sd: dict, source: str = FLOW_FILE) -> None:
    problem = key_mismatch({k: tuple(v.shape) for k, v in flow.state_dict().items()}, sd)
    if problem:
        raise ModelDirError(f"{source}: does not match the flow built from {CONFIG_FILE}: {problem}")
    flow.load_state_dict(sd, strict=True, assign=flow.input_embedding.weight.is_meta)


class Token2Wav:
    def __init__(self, cfg: Token2WavConfig, flow: MaskedDiffWithXvec, hift: HiFTGenerator,
                 model_dir: str | Path | None = None, mel_conf: dict | None = None):
        self.cfg = cfg
        self.flow = flow.eval()
        self.hift = hift.eval()
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.mel_conf = mel_conf or {}
        self._frontend = None

    # --- construction --------------------------------------------------------------------------------
    @staticmethod
    def build(cfg: Token2WavConfig, device="cpu") -> tuple[MaskedDiffWithXvec, HiFTGenerator]:
        with torch.device(device):
            flow = MaskedDiffWithXvec(cfg.flow, cfg.sample_rate, cfg.mel_hop)
            hift = HiFTGenerator(cfg.hift)
        return flow, hift

    @classmethod
    def from_dir(cls, model_dir, device="cpu", dtype: torch.dtype = torch.float32,
                 hift_dtype: torch.dtype | None = None) -> "Token2Wav":
        """Load a CosyVoice-300M-25Hz directory (or one of other sizes, e.g. from `make-tiny`).

        `dtype` is the compute dtype (bf16 is a speed switch, see README); the vocoder runs in `hift_dtype`,
        by default the same (its STFT parts always in float32; a float32 vocoder under a bf16 flow is several
        times slower for a small quality gain, measured by bench/bench_token2wav.py)."""
        root = Path(model_dir)
        if not root.is_dir():
            raise ModelDirError(f"{root}: no such model directory")
        for name in (CONFIG_FILE, FLOW_FILE, HIFT_FILE):
            if not (root / name).is_file():
                raise ModelDirError(f"{root / name}: missing; a CosyVoice-300M-25Hz directory holds {CONFIG_FILE}, "
                                    f"{FLOW_FILE}, {HIFT_FILE} (+ campplus.onnx, speech_tokenizer_v1.onnx for "
                                    f"prompts). A tiny test one: python -m osum_echat.bin.token2wav make-tiny DIR")
        data = load_hyperpyyaml_inert(root / CONFIG_FILE)
        cfg = parse_config(data, root / CONFIG_FILE)
        feat = data.get("feat_extractor")
        mel_conf = dict(getattr(feat, "kwargs", {}) or {})
        flow, hift = cls.build(cfg, "cpu")
        load_flow_state_dict(flow, _load_state(root / FLOW_FILE), os.fspath(root / FLOW_FILE))
        try:
            hift_sd = fold_hift_state_dict(hift, _load_state(root / HIFT_FILE), os.fspath(root / HIFT_FILE))
        except HiFTKeyError as e:
            raise ModelDirError(str(e)) from None
        hift.load_state_dict(hift_sd, strict=True)
        flow.to(device=device, dtype=dtype)
        hift.to(device=device, dtype=hift_dtype or dtype)
        return cls(cfg, flow, hift, root, mel_conf)

    @classmethod
    def load_config(cls, model_dir) -> Token2WavConfig:
        return load_config(Path(model_dir) / CONFIG_FILE)

    def use_estimator(self, backend: str = "torch", threads: int | None = None) -> str:
        """Run the flow's estimator in PyTorch ("torch", the default) or ONNX Runtime ("onnx": CPU, float32;
        1.5-3x faster per pass, see onnx_estimator.py); "auto" is onnx where it applies (a float32 flow on the
        CPU) and falls back to torch, with a warning, if the export or the runtime fails. Returns the backend
        now in use."""
        from osum_echat.token2wav.onnx_estimator import ESTIMATOR_CHOICES, OnnxEstimator, resolve_backend
        if backend not in ESTIMATOR_CHOICES:
            raise ValueError(f"estimator backend {backend!r}: choose one of {', '.join(ESTIMATOR_CHOICES)}")
        chosen = resolve_backend(backend, self.device, self.flow.dtype)
        if chosen == "onnx" and self.device.type != "cpu":
            raise ValueError(f"the ONNX estimator runs on the CPU; token2wav is on {self.device} "
                             "(use the torch estimator there)")
        runner = None
        if chosen == "onnx":
            try:
                runner = OnnxEstimator(self.flow.decoder.estimator, threads)
            except Exception as e:  # noqa: BLE001 - any exporter/runtime failure; "onnx" asked for it explicitly
                if backend != "auto":
                    raise
                log.warning("token2wav: the ONNX estimator is not available (%s: %s); using the torch one",
                            type(e).__name__, e)
                chosen = "torch"
        self.flow.decoder.runner = runner
        return chosen

    # --- properties ----------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def device(self) -> torch.device:
        return self.flow.input_embedding.weight.device

    @property
    def mel_hop(self) -> int:
        return self.cfg.mel_hop

    def num_samples(self, n_tokens: int) -> int:
        """Output length of n tokens: hop * floor(n * sr / (rate * hop))."""
        return self.mel_hop * self.flow.mel_frames(n_tokens)

    # --- prompt --------------------------------------------------------------------------------------
    @property
    def frontend(self):
        if self._frontend is None:
            from osum_echat.token2wav.frontend import Frontend, MelConfig
            if self.model_dir is None:
                raise ModelDirError("this Token2Wav was not loaded from a directory: no ONNX front-end to run")
            self._frontend = Frontend(self.model_dir, mel=MelConfig.from_dict(self.mel_conf))
        return self._frontend

    def prompt_from_wav(self, path):
        """SpeakerPrompt of an audio file (ONNX front-end; cached per path)."""
        return self.frontend.prompt_from_wav(path)

    def prompt_tensors(self, prompt) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(prompt tokens (1, T1) int64, prompt mel (1, M1, 80), x-vector (1, 192)); zeros when prompt is None."""
        mel_dim, spk_dim = self.cfg.flow.output_size, self.cfg.flow.spk_embed_dim
        if prompt is None:
            return (torch.zeros(1, 0, dtype=torch.long, device=self.device),
                    torch.zeros(1, 0, mel_dim, device=self.device), torch.zeros(1, spk_dim, device=self.device))
        tokens = torch.as_tensor(np.asarray(prompt.prompt_tokens), dtype=torch.long).reshape(1, -1)
        mel = torch.as_tensor(np.asarray(prompt.prompt_mel), dtype=torch.float32).reshape(1, -1, mel_dim)
        spk = torch.as_tensor(np.asarray(prompt.spk_embedding), dtype=torch.float32).reshape(1, spk_dim)
        seconds = mel.shape[1] * self.mel_hop / self.sample_rate
        if seconds > MAX_PROMPT_SECONDS or tokens.shape[1] > MAX_PROMPT_SECONDS * self.cfg.flow.input_frame_rate:
            raise ValueError(f"speaker prompt is {max(seconds, tokens.shape[1] / self.cfg.flow.input_frame_rate):.1f}"
                             f" s long; at most {MAX_PROMPT_SECONDS} s (cut the prompt wav)")
        check_token_range(tokens.numpy(), self.cfg.flow.vocab_size)
        return tokens.to(self.device), mel.to(self.device), spk.to(self.device)

    # --- whole utterance -----------------------------------------------------------------------------
    def noise(self, frames: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(1, self.cfg.flow.output_size, frames, generator=generator)
        return z.to(self.device)

    @torch.inference_mode()
    def synthesize_mel(self, tokens, prompt=None, noise: bool = True, n_timesteps: int | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Flow only: tokens -> mel (80, frames) float32."""
        ids = clean_tokens(tokens, self.cfg.flow.vocab_size)
        ptok, pmel, spk = self.prompt_tensors(prompt)
        token = torch.tensor([ids], dtype=torch.long, device=self.device)
        z = self.noise(pmel.shape[1] + self.flow.mel_frames(len(ids)), generator) if noise else None
        return self.flow.inference(token, ptok, pmel, spk, noise=z, n_timesteps=n_timesteps)[0]

    @torch.inference_mode()
    def vocode(self, mel: torch.Tensor, noise: bool = True, generator: torch.Generator | None = None):
        """HiFT: mel (80, frames) -> waveform (256 * frames,) float32 on CPU."""
        return self.hift.inference(mel[None].to(self.device), noise=noise, generator=generator)[0].float().cpu()

    def synthesize(self, tokens, prompt=None, noise: bool = True, n_timesteps: int | None = None,
                   generator: torch.Generator | None = None, return_mel: bool = False):
        """Whole-utterance synthesis (upstream's non-stream path). noise=False: bit-identical runs."""
        mel = self.synthesize_mel(tokens, prompt, noise, n_timesteps, generator)
        wav = self.vocode(mel, noise, generator)
        return (wav, mel.float().cpu()) if return_mel else wav

    # --- streaming -----------------------------------------------------------------------------------
    def stream(self, tokens_iterable, prompt=None, noise: bool = True, config=None,
               n_timesteps: int | None = None, generator: torch.Generator | None = None,
               mel_out: list | None = None, solver=None, gate=None):
        """Yield waveform chunks (1-D float32) while tokens arrive; see streaming.StreamConfig.
        `mel_out`, when given, collects the finalised mel of each packet ((80, n) tensors); `solver`,
        `gate`: see streaming.stream_tokens."""
        from osum_echat.token2wav.streaming import StreamConfig, stream_tokens
        yield from stream_tokens(self, tokens_iterable, prompt, noise, config or StreamConfig(), n_timesteps,
                                 generator, mel_out, solver, gate)
