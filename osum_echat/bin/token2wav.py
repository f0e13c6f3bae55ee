"""CosyVoice-300M-25Hz token2wav command line.

  python -m osum_echat.bin.token2wav check-keys --flow_keys F.tsv --hift_keys H.tsv [H2.tsv]
  python -m osum_echat.bin.token2wav make-tiny DIR
  python -m osum_echat.bin.token2wav synth --model_dir DIR --tokens "12 873 ..." --output OUT.wav
        [--stream] [--prompt_wav W | --prompt_dir P] [--no_noise] [--save_mel OUT.npy] [--wav_format float32]

check-keys builds the full-size flow and HiFT on the meta device and loads state dicts with exactly the
names and shapes of the key manifests (`name<TAB>shape` per line); exit 0 only when every one loads strictly.
make-tiny writes a randomly initialised directory in the official layout (cosyvoice.yaml, flow.pt, hift.pt,
campplus.onnx, speech_tokenizer_v1.onnx) for tests and the demo.
synth writes a 22,050 Hz 16-bit PCM wav (float32 with --wav_format float32) of 256 * floor(T * 22050 / (25 * 256)) samples.

  python -m osum_echat.bin.token2wav save-prompt --model_dir DIR --prompt_wav W --out P

save-prompt runs the ONNX front-end once and writes P/prompt_mel.npy (frames, 80), P/prompt_tokens.npy
(n,) and P/spk_embedding.npy (192,), which `synth --prompt_dir P` reads (a fixed voice with no ONNX run).
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from osum_echat.infer.audio_io import SUBTYPES, add_wav_format_arg, write_wav

from osum_echat.token2wav.config import Token2WavConfig, Token2WavConfigError, config_to_yaml, tiny_config
from osum_echat.token2wav.hift import HiFTKeyError, fold_hift_state_dict, unfold_hift_state_dict
from osum_echat.token2wav.token2wav import (CONFIG_FILE, FLOW_FILE, HIFT_FILE, ModelDirError, Token2Wav,
                                            load_flow_state_dict)


def read_key_manifest(path) -> dict:
    """`name<TAB>[d0, d1, ...]` lines (first line a header) -> {name: shape}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such key manifest")
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip() or (n == 0 and line.startswith("name")):
            continue
        try:
            name, shape = line.split("\t")
            out[name] = tuple(int(d) for d in ast.literal_eval(shape))
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"{path}:{n + 1}: expected 'name<TAB>[dims]', got {line!r}") from e
    return out


def _meta_state(keys: dict) -> dict:
    return {k: torch.empty(shape, device="meta") for k, shape in keys.items()}


def check_keys(flow_keys, hift_keys: list, cfg: Token2WavConfig | None = None) -> list[str]:
    """Load each manifest strictly into the full-size model built on meta -> list of problems (empty: all ok)."""
    flow, hift = Token2Wav.build(cfg or Token2WavConfig(), "meta")
    problems = []
    try:
        load_flow_state_dict(flow, _meta_state(read_key_manifest(flow_keys)), os.fspath(flow_keys))
    except ModelDirError as e:
        problems.append(str(e))
    for path in hift_keys:
        try:
            folded = fold_hift_state_dict(hift, _meta_state(read_key_manifest(path)), os.fspath(path))
            hift.load_state_dict(folded, strict=True, assign=True)
        except HiFTKeyError as e:
            problems.append(str(e))
    return problems


def _save_atomic(obj, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def random_token2wav(cfg: Token2WavConfig, seed: int = 0):
    """Flow + HiFT with seeded random weights of unit-gain scale (tests, demo, benchmarks)."""
    gen = torch.Generator().manual_seed(seed)
    flow, hift = Token2Wav.build(cfg)
    with torch.no_grad():
        for name, p in list(flow.named_parameters()) + list(hift.named_parameters()):
            if name.endswith("alpha"):          # Snake: keep alpha away from 0
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif p.dim() == 1:                   # norms / biases: around their initial value
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
    return flow.eval(), hift.eval()


def make_tiny(model_dir, seed: int = 0, cfg: Token2WavConfig | None = None, onnx: bool = True) -> Path:
    """A randomly initialised model directory in the released layout (hift.pt in the legacy weight-norm form)."""
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = cfg or tiny_config()
    flow, hift = random_token2wav(cfg, seed)
    (out / CONFIG_FILE).write_text(config_to_yaml(cfg), encoding="utf-8")
    _save_atomic(flow.state_dict(), out / FLOW_FILE)
    _save_atomic(unfold_hift_state_dict(hift, "legacy"), out / HIFT_FILE)
    if onnx:
        from osum_echat.token2wav.tiny_onnx import write_tiny_onnx
        write_tiny_onnx(out, seed=seed)
    return out


def parse_tokens(text: str) -> list[int]:
    """'12 873 5' / '12,873,5' / '[12, 873, 5]' -> ids; a path to a file holding such text is read first."""
    if os.path.isfile(text):
        text = Path(text).read_text(encoding="utf-8")
    cleaned = text.replace(",", " ").replace("[", " ").replace("]", " ").split()
    try:
        return [int(t) for t in cleaned]
    except ValueError as e:
        raise ValueError(f"--tokens: expected integers separated by spaces or commas ({e})") from e


def synth(args) -> int:
    from osum_echat.token2wav.streaming import StreamConfig
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    t2w = Token2Wav.from_dir(args.model_dir, dtype=dtype)
    tokens = parse_tokens(args.tokens)
    prompt = None
    if args.prompt_wav:
        prompt = t2w.prompt_from_wav(args.prompt_wav)
    elif args.prompt_dir:
        from osum_echat.token2wav.frontend import SpeakerPrompt
        prompt = SpeakerPrompt.load(args.prompt_dir)
    noise = not args.no_noise
    gen = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    if args.stream:
        conf = StreamConfig(**{k: v for k, v in (("first_chunk", args.first_chunk), ("hop", args.hop))
                               if v is not None})
        mel_parts: list = []
        chunks = list(t2w.stream(iter(tokens), prompt, noise, conf, args.n_timesteps, gen, mel_out=mel_parts))
        wav, mel = torch.cat(chunks), torch.cat(mel_parts, dim=-1)
        print(f"{len(chunks)} packets of {[c.numel() for c in chunks]} samples")
    else:
        wav, mel = t2w.synthesize(tokens, prompt, noise, args.n_timesteps, gen, return_mel=True)
    write_wav(args.output, wav, t2w.sample_rate, SUBTYPES["pcm16" if args.pcm16 else args.wav_format])
    if args.save_mel:
        Path(args.save_mel).parent.mkdir(parents=True, exist_ok=True)
        np.save(args.save_mel, mel.float().cpu().numpy().astype(np.float32))
    print(f"wrote {args.output}: {wav.numel()} samples at {t2w.sample_rate} Hz "
          f"({wav.numel() / t2w.sample_rate:.2f} s) from {len(tokens)} tokens")
    return 0


def save_prompt(args) -> int:
    """save-prompt: a prompt wav -> the three .npy files of a SpeakerPrompt (ONNX front-end only)."""
    from osum_echat.token2wav.config import load_hyperpyyaml_inert
    from osum_echat.token2wav.frontend import Frontend, MelConfig

    yaml_path = Path(args.model_dir) / CONFIG_FILE
    feat = load_hyperpyyaml_inert(yaml_path).get("feat_extractor") if yaml_path.is_file() else None
    prompt = Frontend(args.model_dir, mel=MelConfig.from_dict(getattr(feat, "kwargs", None) or {}))\
        .prompt_from_wav(args.prompt_wav)
    out = prompt.save(args.out)
    print(f"wrote {out}: prompt_mel {prompt.prompt_mel.shape}, prompt_tokens ({prompt.prompt_tokens.size},), "
          f"spk_embedding ({prompt.spk_embedding.size},)")
    return 0


def add_save_prompt_parser(sub) -> None:
    sp = sub.add_parser("save-prompt", help="prompt wav -> prompt_mel.npy, prompt_tokens.npy, spk_embedding.npy")
    sp.add_argument("--model_dir", required=True, help="holds campplus.onnx and speech_tokenizer_v1.onnx")
    sp.add_argument("--prompt_wav", required=True, help="speaker prompt audio (<= 30 s)")
    sp.add_argument("--out", required=True, help="output folder (what synth --prompt_dir reads)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m osum_echat.bin.token2wav", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ck = sub.add_parser("check-keys", help="full-size flow/HiFT on meta vs key manifests (strict)")
    ck.add_argument("--flow_keys", required=True)
    ck.add_argument("--hift_keys", required=True, nargs="+", help="one or more HiFT manifests (either WN form)")
    mt = sub.add_parser("make-tiny", help="write a tiny random model directory in the official layout")
    mt.add_argument("dir")
    mt.add_argument("--seed", type=int, default=0)
    sy = sub.add_parser("synth", help="speech tokens -> wav")
    sy.add_argument("--model_dir", required=True)
    sy.add_argument("--tokens", required=True, help="ids separated by spaces/commas, or a file holding them")
    sy.add_argument("--output", required=True)
    sy.add_argument("--stream", action="store_true", help="render through the streaming path")
    group = sy.add_mutually_exclusive_group()
    group.add_argument("--prompt_wav", help="speaker prompt audio (<= 30 s; needs the ONNX front-end)")
    group.add_argument("--prompt_dir", help="saved prompt features (see save-prompt)")
    sy.add_argument("--no_noise", action="store_true", help="deterministic: zero flow noise and source noise/phases")
    sy.add_argument("--save_mel", help="also save the flow's mel, float32 (80, frames)")
    add_wav_format_arg(sy)
    sy.add_argument("--pcm16", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    sy.add_argument("--n_timesteps", type=int, default=None, help="ODE steps (default: 10, as upstream)")
    sy.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="compute dtype of the flow and the vocoder")
    sy.add_argument("--first_chunk", type=int, default=None, help="--stream: tokens before the first packet")
    sy.add_argument("--hop", type=int, default=None, help="--stream: tokens per later packet")
    sy.add_argument("--seed", type=int, default=None, help="seed the noise (reproducible noisy renders)")
    add_save_prompt_parser(sub)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "check-keys":
            problems = check_keys(args.flow_keys, args.hift_keys)
            for p in problems:
                print(f"FAIL {p}", file=sys.stderr)
            if not problems:
                print(f"ok: {args.flow_keys} and {', '.join(args.hift_keys)} load strictly into the full-size "
                      f"flow/HiFT (0 missing, 0 unexpected, 0 wrong shape)")
            return 0 if not problems else 1
        if args.cmd == "make-tiny":
            out = make_tiny(args.dir, args.seed)
            print(f"wrote tiny token2wav directory {out}")
            return 0
        if args.cmd == "save-prompt":
            return save_prompt(args)
        return synth(args)
    except (ValueError, FileNotFoundError, Token2WavConfigError, ModelDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
