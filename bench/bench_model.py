"""Model benchmarks, side by side in one run:

  1. loss step (forward + backward of the output heads and CE) for one
     sequence at real sizes (hidden 2048, text vocab 151936 + 4097 speech
     outputs): chunked vs naive cross-entropy, peak memory and time;
  2. forward + backward tokens/s of the tiny model (conf/tiny_ct_config.yaml);
  3. encoder + adapter forward at whisper-medium size on 30 s of audio
     against a plain torch.matmul of the same FLOP count.

  python bench/bench_model.py [--part all|loss|tiny|encoder] [--seq 2048] [--threads 2]

On CUDA, memory is torch.cuda.max_memory_allocated; on CPU each loss variant
runs in a fresh process and reports its peak resident-memory growth.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HIDDEN, TEXT_VOCAB, SPEECH_VOCAB = 2048, 151936, 4097


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def loss_step(variant: str, seq: int, device: str, seed: int = 0) -> dict:
    """One loss forward+backward; runs inside its own process on CPU."""
    from osum_echat.models.loss import shifted_loss

    g = torch.Generator().manual_seed(seed)
    dtype = torch.bfloat16
    # made in bf16 directly so no fp32 temporary raises the peak before the step
    text_w = torch.randn(TEXT_VOCAB, HIDDEN, generator=g, dtype=dtype).mul_(0.02).to(device).requires_grad_()
    speech_w = torch.randn(SPEECH_VOCAB, HIDDEN, generator=g, dtype=dtype).mul_(0.02).to(device).requires_grad_()
    speech_b = torch.zeros(SPEECH_VOCAB, device=device, dtype=dtype, requires_grad=True)
    hidden = torch.randn(1, seq, HIDDEN, generator=g, dtype=dtype).to(device).requires_grad_()
    target = torch.randint(0, TEXT_VOCAB + SPEECH_VOCAB, (1, seq), generator=g).to(device)
    target[:, : seq // 8] = -100  # a prompt part that is not learnt
    heads = [(text_w, None), (speech_w, speech_b)]
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_mb()
    start = time.perf_counter()
    out = shifted_loss(hidden, target, heads, chunk_size=None if variant == "naive" else 256)
    out["loss"].backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _rss_mb() - base
    return {"variant": variant, "seconds": time.perf_counter() - start, "peak_mb": peak,
            "loss": float(out["loss"]), "grad_norm": float(hidden.grad.float().norm())}


def bench_loss(seq: int, device: str) -> None:
    results = {}
    for variant in ("naive", "chunked"):
        if device == "cuda":
            results[variant] = loss_step(variant, seq, device)
        else:
            cmd = [sys.executable, __file__, "--_loss_child", variant, "--seq", str(seq),
                   "--threads", str(torch.get_num_threads())]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    n, c = results["naive"], results["chunked"]
    print(f"\n[1] loss step, seq {seq}, hidden {HIDDEN}, vocab {TEXT_VOCAB}+{SPEECH_VOCAB}, bf16 weights, {device}")
    print(f"{'':10s}{'peak MB':>12s}{'seconds':>10s}{'loss':>12s}")
    for r in (n, c):
        print(f"{r['variant']:10s}{r['peak_mb']:12.0f}{r['seconds']:10.2f}{r['loss']:12.6f}")
    print(f"chunked/naive peak memory: {c['peak_mb'] / n['peak_mb']:.1%} (target <= 40%); "
          f"time ratio {c['seconds'] / n['seconds']:.2f}; "
          f"loss rel diff {abs(c['loss'] - n['loss']) / abs(n['loss']):.1e}; "
          f"grad-norm rel diff {abs(c['grad_norm'] - n['grad_norm']) / n['grad_norm']:.1e}")


def bench_tiny(steps: int = 10) -> None:
    from osum_echat.config import load_config
    from osum_echat.models import build_model

    cfg = load_config(REPO / "conf" / "tiny_ct_config.yaml")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    tok = model.tokenizer
    b = 4
    text = tok("i am very happy to see you today, how are you feeling?")["input_ids"] + [tok.eos_token_id]
    n_speech = 150
    batch = dict(keys=[str(i) for i in range(b)], feats=torch.randn(b, 600, 80),
                 feats_lengths=torch.tensor([600, 560, 520, 480], dtype=torch.int32),
                 target=torch.tensor([text] * b), target_lengths=torch.tensor([len(text)] * b),
                 speech_tokens=torch.randint(0, 256, (b, n_speech)),
                 speech_tokens_length=torch.tensor([n_speech] * b), prompt=None, prompt_lengths=None,
                 history=[[] for _ in range(b)], output_type="speech2text_token")
    tokens = int(model.assemble(batch).attention_mask.sum())
    model(batch)["loss"].backward()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        model.zero_grad()
        model(batch)["loss"].backward()
    sec = (time.perf_counter() - start) / steps
    print(f"\n[2] tiny model forward+backward (speech2text_token, batch {b}, {tokens} LLM positions, "
          f"6 s audio each): {sec * 1000:.1f} ms/step, {tokens / sec:,.0f} tokens/s")


def bench_encoder(device: str) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from osum_echat.config import load_config
    from osum_echat.models.adapter import build_adapter_transformer, build_downsampler
    from osum_echat.models.whisper_encoder import build_whisper_encoder

    cfg = load_config(REPO / "conf" / "ct_config.yaml")
    enc = build_whisper_encoder(80, cfg["encoder_conf"]).to(device).eval()
    down = build_downsampler(4, 1024).to(device).eval()
    link = build_adapter_transformer(1024).to(device).eval()
    proj = torch.nn.Linear(1024, HIDDEN).to(device).eval()
    feats = torch.randn(1, 3000, 80, device=device)
    lens = torch.tensor([3000], device=device)

    def run():
        with torch.no_grad():
            x, mask = enc(feats, lens)
            x, mask = down(x, mask)
            x, _ = link(x, mask.sum(-1))
            return proj(x)

    with FlopCounterMode(display=False) as counter:
        run()
    flops = counter.get_total_flops()
    n = round((flops / 2) ** (1 / 3))
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)

    def timed(fn, reps=3):
        fn()
        best = float("inf")
        for _ in range(reps):
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        return best

    t_model = timed(run, reps=2)
    t_mm = timed(lambda: torch.matmul(a, b), reps=2)
    print(f"\n[3] encoder (24 x 1024) + adapter forward, 30 s audio, fp32, {device}: "
          f"{flops / 1e12:.2f} TFLOP")
    print(f"{'encoder+adapter':18s}{t_model:8.2f} s  {flops / t_model / 1e9:8.1f} GFLOP/s")
    print(f"{f'matmul {n}^3':18s}{t_mm:8.2f} s  {2 * n ** 3 / t_mm / 1e9:8.1f} GFLOP/s")
    print(f"ratio encoder+adapter / matmul time: {t_model / t_mm:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="all", choices=["all", "loss", "tiny", "encoder"])
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--_loss_child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args._loss_child:
        print(json.dumps(loss_step(args._loss_child, args.seq, "cpu")))
        return
    print(f"device {device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    if args.part in ("all", "loss"):
        bench_loss(args.seq, device)
    if args.part in ("all", "tiny"):
        bench_tiny()
    if args.part in ("all", "encoder"):
        bench_encoder(device)


if __name__ == "__main__":
    main()
