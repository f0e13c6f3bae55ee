"""Decoding speed, measured side by side in one run (issue 9, Speed).

    python bench/bench_decode.py [--models tiny,qwen0.5b] [--tokens 200] [--threads 2] [--clock wall|cpu]
                                 [--dtype float32|bfloat16]

For each model: the tiny test LLM (conf/tiny_llm) and a random Qwen2 of Qwen2.5-0.5B's shape with
the real vocabulary (151,936 ids), both inside an OSUM-EChat model, greedy text decoding (text2text):
  * tokens/s of our Decoder vs transformers' generate() (what upstream calls) on the same weights
    and prompt embeds, batch 1, dynamic and static cache (timed in turn, best of >= 3);
  * per-step latency of our Decoder with 10, 500 and 2000 positions already decoded (measured as
    the median time between consecutive one-position LLM forwards after a prompt of that length,
    lengths timed in turn);
  * tokens/s at batch 8 vs batch 1, whole runs (best of --repeat) and decode steps alone (median
    step, prefill excluded);
  * the GFLOP/s of the step's matmuls with 1 and 8 rows (plain F.linear and on oneDNN-packed
    weights, what the decoder uses at 4..32 rows), which bound what batching can buy on a CPU;
    the one-off time to pack the weights is printed apart (made once per model and kept).
The eos row of the text head is zeroed so every run generates the requested number of ids.
Prints a table and the target ratios (>= 1, <= 1.5, >= 4).
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
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from osum_echat.config import load_config  # noqa: E402
from osum_echat.data.batch import Batch  # noqa: E402
from osum_echat.generation import packed_linear  # noqa: E402
from osum_echat.generation.decode import Decoder, select_item  # noqa: E402
from osum_echat.models import build_model  # noqa: E402
from osum_echat.tokenizer import load_tokenizer  # noqa: E402

CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU seconds of this process: on a loaded
#                           machine, with --threads 1, close to the wall time the run would take alone)
QWEN05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
               num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True)


def make_model(name: str, dtype: torch.dtype = torch.float32):
    config = load_config(ROOT / "conf/tiny_ct_config.yaml")
    tok = load_tokenizer(config["llm_path"])
    if name == "qwen0.5b":  # same tiny encoder, LLM of Qwen2.5-0.5B's shape (random weights)
        llm_dir = Path(tempfile.mkdtemp(prefix="bench_qwen05b_"))
        conf = json.loads((ROOT / config["llm_path"] / "config.json").read_text())
        conf.update(QWEN05B)
        (llm_dir / "config.json").write_text(json.dumps(conf))
        config = dict(config, llm_path=str(llm_dir))
    torch.manual_seed(0)
    model = build_model(config, tokenizer=tok).eval().to(dtype)
    with torch.no_grad():
        model.embed_tokens.weight[model.text_ids.eos] = 0  # never the argmax: fixed-length runs
    return model


def t2t_batch(model, lengths: list) -> Batch:
    """text2text items whose questions are `lengths` random ids (the prompt the decoder continues)."""
    g = torch.Generator().manual_seed(1)
    n = len(lengths)
    prompt = torch.full((n, max(lengths)), -1, dtype=torch.long)
    for i, length in enumerate(lengths):
        prompt[i, :length] = torch.randint(10, len(model.tokenizer) - 10, (length,), generator=g)
    empty = torch.zeros(n, 0, dtype=torch.long)
    return Batch(keys=[f"q{i}" for i in range(n)], feats=torch.zeros(n, 0, 80), feats_lengths=torch.zeros(n, dtype=torch.int32),
                 target=empty, target_lengths=torch.zeros(n, dtype=torch.int32), speech_tokens=empty,
                 speech_tokens_length=torch.zeros(n, dtype=torch.int32), prompt=prompt,
                 prompt_lengths=torch.tensor(lengths, dtype=torch.int32), history=[[] for _ in range(n)],
                 task=["<TEXT2TEXT>"] * n, output_type="text2text", txts=[""] * n, extra=[{} for _ in range(n)])


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = CLOCK()
        fn()
        best = min(best, CLOCK() - t0)
    return best


def ours(model, batch, tokens: int, batch_size: int = 1):
    dec = Decoder(model, dict(max_text_tokens=tokens), greedy=True, batch_size=batch_size)
    hyps = dec.decode(batch)
    assert all(len(h.raw_ids) == tokens and h.error is None for h in hyps), [len(h.raw_ids) for h in hyps]
    return hyps


@torch.no_grad()
def hf_generate(model, batch, tokens: int, static: bool):
    """transformers' generate() on the same prompt embeds, greedy (upstream's call, do_sample off)."""
    x = model.assemble(batch, with_output=False)
    kw = dict(cache_implementation="static") if static else {}
    out = model.base_llm().generate(inputs_embeds=x.inputs_embeds, attention_mask=x.attention_mask.long(),
                                    max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                    eos_token_id=model.text_ids.eos, pad_token_id=model.text_ids.eos, **kw)
    assert out.shape[1] == tokens
    return out


def timed_steps(model, fn) -> tuple:
    """(seconds of fn(), seconds of each decode step in it): a step is the time between the starts
    of consecutive one-position forwards of the LLM (head, processors and bookkeeping included; ours
    feeds embeds, generate() ids)."""
    starts = []

    def note(module, args, kwargs):
        x = kwargs.get("inputs_embeds")
        x = kwargs.get("input_ids") if x is None else x
        if x.shape[1] == 1:
            starts.append(CLOCK())

    hook = model.base_llm().model.register_forward_pre_hook(note, with_kwargs=True)
    try:
        total = timed(fn)
    finally:
        hook.remove()
    return total, [b - a for a, b in zip(starts, starts[1:])]


def step_times(model, batch, tokens: int, batch_size: int = 1) -> tuple:
    """(seconds of the whole greedy run of `tokens` ids by our Decoder, seconds of each decode step)."""
    return timed_steps(model, lambda: ours(model, batch, tokens, batch_size))


def step_latencies(model, contexts: tuple, n: int, repeat: int) -> dict:
    """Median step seconds after a prompt of each length; the lengths are timed in turn, `repeat`
    rounds, so a change of machine load hits them alike."""
    batches = {c: t2t_batch(model, [c]) for c in contexts}
    times = {c: [] for c in contexts}
    for _ in range(repeat):
        for c in contexts:
            times[c] += step_times(model, batches[c], 2 + n)[1]
    return {c: statistics.median(t) for c, t in times.items()}


def gemm_rates(llm_config, reps: int = 3) -> dict:
    """GFLOP/s of the decode step's matmuls (one layer's + the text head) with 1 and 8 input rows:
    plain F.linear, and on oneDNN-packed weights (packed_linear, what the decoder uses at 4..32 rows)."""
    c = llm_config
    hd = c.hidden_size // c.num_attention_heads
    shapes = [(c.hidden_size, c.hidden_size), (c.hidden_size, 2 * c.num_key_value_heads * hd),
              (c.hidden_size, c.hidden_size), (c.hidden_size, c.intermediate_size),
              (c.hidden_size, c.intermediate_size), (c.intermediate_size, c.hidden_size),
              (c.hidden_size, c.vocab_size)]
    weights = [torch.randn(n, k) for k, n in shapes]
    packs = [torch.ops.mkldnn._reorder_linear_weight(w, packed_linear.PACK_HINT_ROWS) for w in weights]
    flops = {m: sum(2 * m * k * n for k, n in shapes) for m in (1, 8)}
    out = {}
    for rows in (1, 8):
        xs = [torch.randn(rows, k) for k, _ in shapes]
        plain = lambda: [F.linear(x, w) for x, w in zip(xs, weights)]  # noqa: E731
        packed = lambda: [torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], "")  # noqa: E731
                          for x, p in zip(xs, packs)]
        out[f"plain_m{rows}"] = flops[rows] / timed(plain, reps) / 1e9
        out[f"packed_m{rows}"] = flops[rows] / timed(packed, reps) / 1e9
    return out


def batch_ratio(model, tokens: int, repeat: int = 1) -> dict:
    """tokens/s of 8 items decoded together vs one by one: whole runs (prefill included; best of
    `repeat`, per item for the single runs), and the decode steps alone (median step)."""
    b8 = t2t_batch(model, [8 + 3 * i for i in range(8)])
    t0 = CLOCK()
    ours(model, b8, 2, batch_size=8)  # packs the weights (once per model; kept while it lives)
    pack_s = CLOCK() - t0
    t8, t1, s8, s1 = float("inf"), [float("inf")] * 8, [], []
    for _ in range(repeat):  # in turn, so a change of machine load hits both alike
        total, steps = step_times(model, b8, tokens, batch_size=8)
        t8, s8 = min(t8, total), s8 + steps
        for i in range(8):
            total, steps = step_times(model, select_item(b8, i), tokens)
            t1[i], s1 = min(t1[i], total), s1 + steps
    return {"b8_tok_s": 8 * tokens / t8, "b1x8_tok_s": 8 * tokens / sum(t1),
            "b8_step_tok_s": 8 / statistics.median(s8), "b1x8_step_tok_s": 1 / statistics.median(s1),
            "pack_s": pack_s}


def bench(name: str, tokens: int, repeat: int, dtype: torch.dtype = torch.float32) -> dict:
    model = make_model(name, dtype)
    b1 = t2t_batch(model, [24])
    ours(model, b1, 4)  # warm up
    hf_generate(model, b1, 4, False)
    r = {"model": name, "tokens": tokens}
    runs = {"ours_tok_s": lambda: ours(model, b1, tokens), "hf_tok_s": lambda: hf_generate(model, b1, tokens, False),
            "hf_static_tok_s": lambda: hf_generate(model, b1, tokens, True)}
    best = {k: float("inf") for k in runs}
    steps = {k: [] for k in runs}
    for _ in range(max(repeat, 3)):  # in turn, so a change of machine load hits all three alike
        for k, fn in runs.items():
            total, run_steps = timed_steps(model, fn)
            best[k], steps[k] = min(best[k], total), steps[k] + run_steps
    r.update({k: tokens / t for k, t in best.items()})
    r.update({f"{k}_step_ms": 1000 * statistics.median(v) for k, v in steps.items()})
    n = 10 if name == "qwen0.5b" else 100
    for ctx, sec in step_latencies(model, (10, 500, 2000), n, repeat).items():
        r[f"step_ms@{ctx}"] = 1000 * sec
    r.update(batch_ratio(model, tokens, repeat))
    r.update(gemm_rates(model.base_llm().config, 1 if name == "qwen0.5b" else 20))
    r["ratio_vs_generate"] = r["ours_tok_s"] / max(r["hf_tok_s"], r["hf_static_tok_s"])
    r["ratio_vs_generate_steps"] = min(r["hf_tok_s_step_ms"], r["hf_static_tok_s_step_ms"]) / r["ours_tok_s_step_ms"]
    r["ratio_step_2000_vs_10"] = r["step_ms@2000"] / r["step_ms@10"]
    r["ratio_b8_vs_b1"] = r["b8_tok_s"] / r["b1x8_tok_s"]
    r["ratio_b8_vs_b1_steps"] = r["b8_step_tok_s"] / r["b1x8_step_tok_s"]
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,qwen0.5b")
    ap.add_argument("--tokens", type=int, default=100, help="ids generated per run (tiny)")
    ap.add_argument("--big_tokens", type=int, default=100,
                    help="ids generated per run (qwen0.5b; fewer makes the prefill dominate the batch ratio)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings (tiny; qwen0.5b: 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="of the whole model, ours and generate() alike (the step matmul rates stay float32)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: time by this process's CPU seconds (less noise on a shared machine, --threads 1)")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    rows = []
    for m in args.models.split(","):
        r = bench(m, args.big_tokens if m == "qwen0.5b" else args.tokens, 1 if m == "qwen0.5b" else args.repeat,
                  getattr(torch, args.dtype))
        rows.append(r)
        print(f"\n== {r['model']} (greedy text, {r['tokens']} ids, {args.dtype}, {args.threads} threads, "
              f"{args.clock} clock)")
        print(f"tokens/s batch 1: ours {r['ours_tok_s']:.1f} | generate() dynamic cache {r['hf_tok_s']:.1f}"
              f" | generate() static cache {r['hf_static_tok_s']:.1f}")
        print(f"median step ms batch 1 (same runs): ours {r['ours_tok_s_step_ms']:.1f} | generate() dynamic "
              f"{r['hf_tok_s_step_ms']:.1f} | static {r['hf_static_tok_s_step_ms']:.1f} "
              f"({r['ratio_vs_generate_steps']:.2f}x)")
        print(f"step latency ms at 10 / 500 / 2000 positions: {r['step_ms@10']:.2f} / {r['step_ms@500']:.2f} / "
              f"{r['step_ms@2000']:.2f}")
        print(f"tokens/s batch 8: {r['b8_tok_s']:.1f} vs batch 1: {r['b1x8_tok_s']:.1f}")
        print(f"tokens/s decode steps only (median step), batch 8: {r['b8_step_tok_s']:.1f} vs batch 1: "
              f"{r['b1x8_step_tok_s']:.1f} ({r['ratio_b8_vs_b1_steps']:.2f}x)")
        print(f"(one-off: first batch-8 decode of 2 ids, packing the weights included: {r['pack_s']:.2f} s)")
        print(f"step matmuls GFLOP/s, 1 row vs 8 rows: plain F.linear {r['plain_m1']:.1f} vs {r['plain_m8']:.1f}"
              f" | packed weights {r['packed_m1']:.1f} vs {r['packed_m8']:.1f} | 8-row / 1-row (plain) "
              f"time: plain {8 * r['plain_m1'] / r['plain_m8']:.2f}x, packed {8 * r['plain_m1'] / r['packed_m8']:.2f}x")
        print(f"RATIO ours/generate() {r['ratio_vs_generate']:.2f} (target >= 1) | step 2000/10 "
              f"{r['ratio_step_2000_vs_10']:.2f} (target <= 1.5) | batch8/batch1 {r['ratio_b8_vs_b1']:.2f} (target >= 4)",
              flush=True)
    print("\n" + json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
