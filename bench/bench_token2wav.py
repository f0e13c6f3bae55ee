"""token2wav speed and streaming quality, measured side by side in one run (issue 8, Speed).

  python bench/bench_token2wav.py [--seconds 10] [--threads 2] [--size full|tiny] [--steps 5]
                                  [--sweep 8,12,15,20,25,35,50 --sweep_seconds 6]

At full size with random weights (flow 104.9M + HiFT 20.5M parameters), prints:
  - torch.matmul rate (fp32, bf16) measured in this run, as the yardstick;
  - matmul/conv FLOPs of one synthesis (torch's FlopCounterMode), split flow / vocoder;
  - whole-utterance synthesis of `--seconds` of tokens: flow / vocoder time, real-time factor, achieved FLOP
    rate against the matmul rate, in fp32 and bf16 (flow + vocoder weights in bf16; ODE state in fp32);
  - the fp32 flow with its estimator in ONNX Runtime (serve's default on the CPU) beside torch: whole flow
    time and a 100-token stream's first/all packets per backend (--no_onnx skips it);
  - quality of each speed switch (bf16, fewer ODE steps): log-mel L1 against the fp32 10-step render; the
    bf16 flow with the fp32 vocoder (time and quality) beside the all-bf16 default;
  - streaming: time to the first audio packet counted from the first token's arrival, against 1/5 of the
    whole-utterance time;
  - the flow of 30 tokens against upstream's ~25 s on this CPU (spec §8);
  - with --sweep: streamed vs whole log-mel L1 per first-chunk size (deterministic mode), next to the L1
    between two whole renders that differ only in their noise seed (the model's own variation).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from osum_echat.bin.token2wav import random_token2wav  # noqa: E402
from osum_echat.token2wav.config import Token2WavConfig, tiny_config  # noqa: E402
from osum_echat.token2wav.frontend import prompt_mel  # noqa: E402
from osum_echat.token2wav.streaming import StreamConfig  # noqa: E402
from osum_echat.token2wav.token2wav import Token2Wav  # noqa: E402

UPSTREAM_FLOW_30_TOKENS_S = 25.0   # spec §8: upstream's flow, 30 tokens, this 2-core CPU


def matmul_rate(dtype, n=1024, min_time=1.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_time:
        a @ b
        reps += 1
    return 2 * n ** 3 * reps / (time.perf_counter() - start)


def meta_flops(cfg, n_tokens: int) -> tuple[int, int]:
    """matmul/conv/attention FLOPs of one synthesis (flow, vocoder), counted on the meta device (no compute)."""
    from torch.utils.flop_counter import FlopCounterMode
    flow, hift = Token2Wav.build(cfg, "meta")
    meta = dict(device="meta")
    with FlopCounterMode(display=False) as counter:
        mel = flow.inference(torch.zeros(1, n_tokens, dtype=torch.long, **meta),
                             torch.zeros(1, 0, dtype=torch.long, **meta), torch.zeros(1, 0, 80, **meta),
                             torch.zeros(1, 192, **meta))
    flow_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        hift.inference(mel)
    return flow_flops, counter.get_total_flops()


def log_mel_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean |log-mel(a) - log-mel(b)| with the prompt-mel front-end (spec §5), natural-log units."""
    return float((torch.from_numpy(prompt_mel(a)) - torch.from_numpy(prompt_mel(b))).abs().mean())


def timed_synthesis(t2w: Token2Wav, tokens, steps=None):
    start = time.perf_counter()
    mel = t2w.synthesize_mel(tokens, noise=False, n_timesteps=steps)
    mid = time.perf_counter()
    wav = t2w.vocode(mel, noise=False)
    end = time.perf_counter()
    return wav, mel, mid - start, end - mid


def first_packet(t2w: Token2Wav, tokens, conf: StreamConfig):
    start = time.perf_counter()
    first, chunks = None, []
    for chunk in t2w.stream(iter(tokens), noise=False, config=conf):
        if first is None:
            first = time.perf_counter() - start
        chunks.append(chunk)
    return first, time.perf_counter() - start, torch.cat(chunks)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", choices=["full", "tiny"], default="full")
    ap.add_argument("--steps", default="5", help="fewer-ODE-step variants to time, comma separated ('' for none)")
    ap.add_argument("--no_bf16", action="store_true")
    ap.add_argument("--no_stream", action="store_true")
    ap.add_argument("--no_onnx", action="store_true", help="skip the ONNX Runtime estimator's timing")
    ap.add_argument("--sweep", default="", help="first-chunk sizes for the streamed-vs-whole measurement")
    ap.add_argument("--sweep_seconds", type=float, default=6.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = Token2WavConfig() if args.size == "full" else tiny_config()
    flow, hift = random_token2wav(cfg, seed=0)
    t2w = Token2Wav(cfg, flow, hift)
    n_tok = int(round(args.seconds * cfg.flow.input_frame_rate))
    tokens = torch.randint(0, cfg.flow.vocab_size, (n_tok,), generator=torch.Generator().manual_seed(1)).tolist()
    audio_s = t2w.num_samples(n_tok) / t2w.sample_rate
    n_flow = sum(p.numel() for p in flow.parameters())
    n_hift = sum(p.numel() for p in hift.parameters())
    print(f"size {args.size}: flow {n_flow / 1e6:.1f}M + HiFT {n_hift / 1e6:.1f}M params, {args.threads} threads, "
          f"{n_tok} tokens = {audio_s:.2f} s of audio")

    with torch.inference_mode():
        rate32 = matmul_rate(torch.float32)
        rate16 = matmul_rate(torch.bfloat16)
        print(f"torch.matmul 1024^3: fp32 {rate32 / 1e9:.1f} GFLOP/s, bf16 {rate16 / 1e9:.1f} GFLOP/s "
              f"(re-measured around each timing below)")
        flow_flops, hift_flops = meta_flops(cfg, n_tok)
        total_flops = flow_flops + hift_flops
        t2w.synthesize(tokens[:50], noise=False)                          # warm-up
        print(f"FLOPs of one synthesis (matmul/conv/attention): flow {flow_flops / 1e9:.1f} G, vocoder "
              f"{hift_flops / 1e9:.1f} G, {total_flops / audio_s / 1e9:.1f} GFLOP per second of audio")

        wav32, mel32, tf, th = timed_synthesis(t2w, tokens)
        whole_s = tf + th
        # on a shared machine the matmul rate moves: use the mean of the rates measured around the timing
        rate32 = (rate32 + matmul_rate(torch.float32)) / 2
        print(f"fp32 whole: flow {tf:.2f} s + vocoder {th:.2f} s = {whole_s:.2f} s, RTF {whole_s / audio_s:.3f}; "
              f"{total_flops / whole_s / 1e9:.1f} GFLOP/s = {total_flops / whole_s / rate32:.0%} of the fp32 "
              f"matmul rate {rate32 / 1e9:.1f} GFLOP/s (flow {flow_flops / tf / rate32:.0%}, vocoder {hift_flops / th / rate32:.0%})")

        for steps in [int(s) for s in args.steps.split(",") if s.strip()]:
            wav_s, mel_s, tf_s, th_s = timed_synthesis(t2w, tokens, steps)
            print(f"fp32 {steps} ODE steps: flow {tf_s:.2f} s, RTF {(tf_s + th_s) / audio_s:.3f}; mel L1 vs 10 steps "
                  f"{(mel_s - mel32).abs().mean():.4f}, log-mel L1 of the audio {log_mel_l1(wav_s, wav32):.4f}")

        if not args.no_onnx:
            bench_onnx(t2w, tokens, audio_s, tf, mel32, args.threads)

        if not args.no_bf16:
            bench_bf16(t2w, cfg, tokens, audio_s, (flow_flops, hift_flops), whole_s, wav32, mel32)

        if not args.no_stream:
            conf = StreamConfig()
            first, total, wav_st = first_packet(t2w, tokens, conf)
            verdict = "met" if first <= whole_s / 5 else "NOT met"
            print(f"stream fp32 (first_chunk {conf.first_chunk}, hop {conf.hop}): first packet {first:.2f} s after "
                  f"the first token (target <= whole/5 = {whole_s / 5:.2f} s: {verdict}); all packets {total:.2f} s; "
                  f"streamed vs whole log-mel L1 {log_mel_l1(wav_st, wav32):.4f}")

        start = time.perf_counter()
        t2w.synthesize_mel(tokens[:30], noise=False)
        t30 = time.perf_counter() - start
        print(f"flow of 30 tokens: {t30:.2f} s vs upstream ~{UPSTREAM_FLOW_30_TOKENS_S:.0f} s on this CPU "
              f"(spec §8): {UPSTREAM_FLOW_30_TOKENS_S / t30:.1f}x faster")
        for tflops in (50, 200):
            print(f"GPU at {tflops} TFLOP/s sustained: RTF ~{total_flops / audio_s / (tflops * 1e12):.5f} "
                  f"(FLOP count / rate; launch overheads excluded)")

        if args.sweep:
            sweep(t2w, cfg, [int(x) for x in args.sweep.split(",")], args.sweep_seconds)


def bench_onnx(t2w: Token2Wav, tokens, audio_s, flow32_s, mel32, threads):
    """The fp32 flow with its estimator in ONNX Runtime (serve's default on the CPU) beside the torch one:
    whole flow, then a stream's first packet and all packets, each backend timed back to back."""
    start = time.perf_counter()
    t2w.use_estimator("onnx", threads)
    export_s = time.perf_counter() - start
    t2w.synthesize(tokens[:50], noise=False)                              # warm-up
    start = time.perf_counter()
    mel = t2w.synthesize_mel(tokens, noise=False)
    tf = time.perf_counter() - start
    print(f"fp32 flow, ONNX Runtime estimator: {tf:.2f} s vs torch {flow32_s:.2f} s = {flow32_s / tf:.2f}x "
          f"(export + session {export_s:.1f} s, once); mel max |diff| vs torch {(mel - mel32).abs().max():.2e} "
          f"(mean |mel| {mel32.abs().mean():.3f})")
    conf, n = StreamConfig(), min(len(tokens), 100)
    for backend in ("torch", "onnx", "torch", "onnx"):   # interleaved: the machine's load moves
        t2w.use_estimator(backend, threads)
        first, total, _ = first_packet(t2w, tokens[:n], conf)
        print(f"  stream of {n} tokens ({t2w.num_samples(n) / t2w.sample_rate:.2f} s of audio), {backend} estimator: "
              f"first packet {first * 1e3:.0f} ms, all packets {total * 1e3:.0f} ms")
    t2w.use_estimator("torch")


def bench_bf16(t2w: Token2Wav, cfg, tokens, audio_s, flops, whole32_s, wav32, mel32):
    """bf16 flow + vocoder (the --dtype bfloat16 default), then the bf16 flow with the fp32 vocoder."""
    flow_flops, hift_flops = flops
    total = flow_flops + hift_flops
    # a bf16 copy: casting back would leave the fp32 model with bf16-rounded weights
    t2w16 = Token2Wav(cfg, copy.deepcopy(t2w.flow).to(torch.bfloat16), copy.deepcopy(t2w.hift).to(torch.bfloat16))
    t2w16.synthesize(tokens[:50], noise=False)
    rate = matmul_rate(torch.bfloat16)
    wav16, mel16, tf, th = timed_synthesis(t2w16, tokens)
    rate = (rate + matmul_rate(torch.bfloat16)) / 2
    print(f"bf16 whole: flow {tf:.2f} s + vocoder {th:.2f} s = {tf + th:.2f} s, RTF {(tf + th) / audio_s:.3f} "
          f"({whole32_s / (tf + th):.2f}x fp32); {total / (tf + th) / rate:.0%} of the bf16 matmul rate "
          f"{rate / 1e9:.1f} GFLOP/s (flow {flow_flops / tf / rate:.0%}, vocoder {hift_flops / th / rate:.0%}); "
          f"RTF 1 needs {total / audio_s / rate:.0%}; mel L1 vs fp32 {(mel16 - mel32).abs().mean():.4f} "
          f"(mean |mel| {mel32.abs().mean():.3f}), log-mel L1 of the audio {log_mel_l1(wav16, wav32):.4f}")
    start = time.perf_counter()
    wav_h32 = t2w.vocode(mel16, noise=False)
    th32 = time.perf_counter() - start
    print(f"bf16 flow + fp32 vocoder (hift_dtype=torch.float32): vocoder {th32:.2f} s (bf16 {th:.2f} s); log-mel L1 "
          f"of the audio vs fp32 {log_mel_l1(wav_h32, wav32):.4f} (bf16 vocoder {log_mel_l1(wav16, wav32):.4f}); "
          f"waveform L1 {(wav_h32 - wav32).abs().mean():.4f} vs {(wav16 - wav32).abs().mean():.4f} "
          f"(mean |wav| {wav32.abs().mean():.4f})")


def sweep(t2w: Token2Wav, cfg, sizes, seconds):
    n = int(round(seconds * cfg.flow.input_frame_rate))
    tokens = torch.randint(0, cfg.flow.vocab_size, (n,), generator=torch.Generator().manual_seed(2)).tolist()
    whole = t2w.synthesize(tokens, noise=False)
    seeds = [t2w.synthesize(tokens, generator=torch.Generator().manual_seed(s)) for s in (10, 11)]
    print(f"streamed vs whole, {n} tokens, deterministic; two whole renders with different noise seeds differ by "
          f"log-mel L1 {log_mel_l1(seeds[0], seeds[1]):.4f}")
    for size in sizes:
        conf = StreamConfig(first_chunk=size, overlap=min(StreamConfig.overlap, size - 1))
        first, total, wav = first_packet(t2w, tokens, conf)
        first_len = wav.numel() if size >= n else None
        head = t2w.num_samples(min(size, n))
        print(f"  first_chunk {size:3d}: log-mel L1 {log_mel_l1(wav, whole):.4f} (first {head} samples "
              f"{log_mel_l1(wav[:head], whole[:head]):.4f}), first packet {first:.2f} s, all {total:.2f} s"
              + (" (one window)" if first_len else ""))


if __name__ == "__main__":
    main()
