"""Per-component cost of a live turn at full size, random weights (issue 17, "Full size"), and what it
projects to at GPU rates.

    python bench/bench_serving_fullsize.py [--models qwen0.5b,qwen3b] [--dtype bfloat16] [--threads 1]
                                           [--clock cpu|wall] [--steps 12] [--no_token2wav]

For the Qwen2.5-0.5B and Qwen2.5-3B LLM shapes (real 151,936-id vocabulary; the tiny encoder, which
a turn runs once): the prefill of a 150-position prompt and the median decode step at batch 1 and
batch 4 (bench_decode's model and timing helpers). For token2wav at full size (flow 104.9M + HiFT
20.5M, bench_token2wav's helpers): the first streamed window (10 tokens, the default first chunk)
from the first token to the first audio. --clock cpu (default) counts this process's CPU seconds, so
that with one thread a run on a busy machine reads close to what it takes alone.
Then the projection: a decode step is memory-bound (each step reads every weight once), so at batch
1..8 a step takes about weight bytes / (HBM bandwidth x efficiency) plus a fixed per-step overhead;
token2wav's first window is compute-bound: its FLOPs / sustained FLOP rate. The assumed rates are
the constants below and are printed with the result.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import bench_decode  # noqa: E402

QWEN3B = dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
              num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True)
SHAPES = {"qwen0.5b": bench_decode.QWEN05B, "qwen3b": QWEN3B}
# GPU assumptions for the projection: (name, HBM GB/s, dense bf16 TFLOP/s)
GPUS = [("RTX 4090", 1008, 165), ("A100 80GB", 2039, 312), ("H100 SXM", 3350, 990)]
BW_EFFICIENCY = 0.6        # fraction of peak bandwidth a small-batch decode step reaches in eager PyTorch
FLOP_EFFICIENCY = 0.4      # fraction of the dense rate for the prefill's large matmuls
T2W_EFFICIENCY = 0.15      # token2wav's first window: small convolutions and attention over ~40 frames
LAYER_OVERHEAD_MS = 0.11   # kernel launches + Python per transformer layer per forward (eager, no CUDA graphs)
T2W_OVERHEAD_MS = 30.0     # launches of the first window: 10 Euler steps of the U-Net, then HiFT
ENCODER_MS = 10.0          # the speech encoder on a few seconds of audio
TEXT_TOKENS_BEFORE_SPEECH = 20  # a short spoken answer's text phase (text-then-speech checkpoints)
PROMPT_POSITIONS = 150

def make_model(shape: str, dtype: torch.dtype):
    from osum_echat.config import load_config
    from osum_echat.models import build_model
    from osum_echat.tokenizer import load_tokenizer

    config = load_config(ROOT / "conf/tiny_ct_config.yaml")
    llm_dir = Path(tempfile.mkdtemp(prefix=f"bench_{shape}_"))
    conf = json.loads((ROOT / config["llm_path"] / "config.json").read_text())
    conf.update(SHAPES[shape])
    (llm_dir / "config.json").write_text(json.dumps(conf))
    torch.manual_seed(0)
    model = build_model(dict(config, llm_path=str(llm_dir)), tokenizer=load_tokenizer(config["llm_path"]),
                        llm_dtype=dtype).eval().to(dtype)
    with torch.no_grad():
        model.embed_tokens.weight[model.text_ids.eos] = 0  # never the argmax: fixed-length runs
    return model


def llm_costs(shape: str, dtype: torch.dtype, steps: int) -> dict:
    model = make_model(shape, dtype)
    llm = model.base_llm()
    weight_bytes = sum(p.numel() * p.element_size() for p in llm.parameters())
    b1, b4 = bench_decode.t2t_batch(model, [24]), bench_decode.t2t_batch(model, [24, 27, 30, 33])
    bench_decode.ours(model, b1, 2)  # warm-up (packs bf16 weights once)
    bench_decode.ours(model, b4, 2, batch_size=4)
    prompt = bench_decode.t2t_batch(model, [150])
    clock = bench_decode.CLOCK
    t0 = clock()
    bench_decode.ours(model, prompt, 1)
    prefill = clock() - t0
    _, s1 = bench_decode.step_times(model, b1, steps)
    _, s4 = bench_decode.step_times(model, b4, steps, batch_size=4)
    return {"shape": shape, "params": sum(p.numel() for p in llm.parameters()), "weight_gb": weight_bytes / 1e9,
            "prefill150_ms": 1000 * prefill, "step_b1_ms": 1000 * statistics.median(s1),
            "step_b4_ms": 1000 * statistics.median(s4)}


def token2wav_first_window(dtype: torch.dtype) -> dict:
    import bench_token2wav
    from osum_echat.bin.token2wav import random_token2wav
    from osum_echat.token2wav.config import Token2WavConfig
    from osum_echat.token2wav.streaming import StreamConfig
    from osum_echat.token2wav.token2wav import Token2Wav

    cfg = Token2WavConfig()
    flow, hift = random_token2wav(cfg, seed=0)
    t2w = Token2Wav(cfg, flow.to(dtype), hift.to(dtype)) if dtype != torch.float32 else Token2Wav(cfg, flow, hift)
    conf = StreamConfig()
    tokens = torch.randint(0, cfg.flow.vocab_size, (conf.first_chunk,), generator=torch.Generator().manual_seed(1))
    tokens = tokens.tolist()
    clock = bench_decode.CLOCK
    bench_token2wav.first_packet(t2w, tokens, conf)  # warm-up
    t0 = clock()
    first, _, wav = bench_token2wav.first_packet(t2w, tokens, conf)
    took = clock() - t0
    flow_flops, hift_flops = bench_token2wav.meta_flops(cfg, conf.first_chunk)
    return {"dtype": str(dtype).replace("torch.", ""), "first_window_ms": 1000 * took,
            "tokens": conf.first_chunk, "audio_ms": 1000 * len(wav) / t2w.sample_rate,
            "gflop": (flow_flops + hift_flops) / 1e9}


def projection(llm: list, t2w: dict | None):
    print(f"\n== projection at GPU rates, bf16 weights (assumptions: decode step = weight bytes / (HBM bandwidth x "
          f"{BW_EFFICIENCY}) + {LAYER_OVERHEAD_MS} ms per layer; prefill of {PROMPT_POSITIONS} positions = its FLOPs / "
          f"(dense rate x {FLOP_EFFICIENCY}) + the same overhead; token2wav's first window = its FLOPs / (dense rate x "
          f"{T2W_EFFICIENCY}) + {T2W_OVERHEAD_MS:.0f} ms; first audio of a text-then-speech answer = encoder "
          f"{ENCODER_MS:.0f} ms + prefill + {TEXT_TOKENS_BEFORE_SPEECH} text steps + 10 speech steps + the first window; "
          "a step at batch 1..16 costs about what one at batch 1 does, the weights being read once per step)")
    for name, bw, tflops in GPUS:
        parts = []
        for r in llm:
            overhead = LAYER_OVERHEAD_MS * SHAPES[r["shape"]]["num_hidden_layers"]
            step = 1000 * r["params"] * 2 / (bw * 1e9 * BW_EFFICIENCY) + overhead
            prefill = 1000 * 2 * r["params"] * PROMPT_POSITIONS / (tflops * 1e12 * FLOP_EFFICIENCY) + overhead
            t2w_ms = 1000 * t2w["gflop"] / (tflops * 1e3 * T2W_EFFICIENCY) + T2W_OVERHEAD_MS if t2w else 0.0
            first = ENCODER_MS + prefill + (TEXT_TOKENS_BEFORE_SPEECH + 10) * step + t2w_ms
            parts.append(f"{r['shape']}: step {step:.1f} ms ({1000 / step:.0f} tokens/s per session), prefill "
                         f"{prefill:.0f} ms, token2wav first window {t2w_ms:.0f} ms, first audio ~{first:.0f} ms")
        print(f"  {name} ({bw} GB/s, {tflops} TFLOP/s): " + "; ".join(parts))

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="qwen0.5b,qwen3b")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    ap.add_argument("--steps", type=int, default=12, help="decode steps timed per run")
    ap.add_argument("--no_token2wav", action="store_true")
    ap.add_argument("--from_json", default=None, help="only the projection, from the JSON line of an earlier run")
    args = ap.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text().strip().splitlines()[-1])
        projection(saved["llm"], saved["token2wav"])
        return 0
    torch.set_num_threads(args.threads)
    bench_decode.CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    dtype = getattr(torch, args.dtype)
    print(f"{args.dtype}, {args.threads} thread(s), {args.clock} clock")
    rows = []
    with torch.no_grad():  # not inference_mode: the decoder's packed weight copies track versions
        for shape in [m for m in args.models.split(",") if m]:
            r = llm_costs(shape, dtype, args.steps)
            rows.append(r)
            print(f"{shape}: {r['params'] / 1e9:.2f}B LLM params ({r['weight_gb']:.1f} GB) | prefill of 150 positions "
                  f"{r['prefill150_ms']:.0f} ms | decode step batch 1 {r['step_b1_ms']:.0f} ms, batch 4 "
                  f"{r['step_b4_ms']:.0f} ms ({4 * r['step_b1_ms'] / r['step_b4_ms']:.2f}x the tokens/s)", flush=True)
    with torch.inference_mode():
        t2w = None if args.no_token2wav else token2wav_first_window(dtype)
        if t2w:
            print(f"token2wav ({t2w['dtype']}): first window of {t2w['tokens']} tokens ({t2w['audio_ms']:.0f} ms of "
                  f"audio, {t2w['gflop']:.1f} GFLOP): {t2w['first_window_ms']:.0f} ms")
    projection(rows, t2w)
    print("\n" + json.dumps({"llm": rows, "token2wav": t2w}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
