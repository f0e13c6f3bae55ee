"""Stage-3 LoRA at full size: one optimizer step, peak memory as the proxy for GPU memory.

  python bench/bench_stage3_lora.py [--shape both|think30s|dynamic3700] [--checkpoint CKPT]
                                    [--tmp /tmp] [--keep] [--threads 2]

The config is recipes/echat/stage3_empathy_lora_24gb/conf/train.yaml (full size,
LoRA rank 64 on the LLM, encoder frozen, adapter trainable, LLM gradient
checkpointing). Random weights in the released layout (bf16, ~7 GB) are written
once (see bench_fullsize.py) and loaded as a stage-2 init: lean load, fresh LoRA
adapters, model in bf16. Each shape runs in a fresh process: forward, backward,
grad clip, one AdamW step, on CPU. Shapes (upstream recipe, conf/ct_config.yaml):
  think30s     one 30 s utterance, <S2TCHAT> <TEXT2TOKEN> <THINK>: 300 think+answer
               text tokens, 750 speech tokens (the speech task's budget is
               0.6 x max_seq_in_batch, so a dynamic batch holds one such utterance)
  dynamic3700  the fullest dynamic batch at max_seq_in_batch 3700: four 30 s
               utterances of <S2TCHAT> <THINKER> with 490 think+answer tokens each
               (4 x upstream's length estimate 923 = 3692 <= 3700)
  seq2048      one 30 s <S2TCHAT> <THINKER> utterance whose think+answer text fills the
               LLM input to exactly --seq positions (2048): the training step's tokens/s
               at that length, for the record (not part of "both")
The step's tokens/s is LLM input positions (B x L) / step seconds.
Peak memory is the process's peak RSS (weights are memory-mapped from the
checkpoint file and counted once touched); torch has no allocator statistics on
CPU, so the tensor-level split (weights, trainable, grads, optimizer states) is
counted from the tensors themselves and the rest is activations + runtime.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fullsize_common import REPO, ScratchDir, peak_rss_gb, tokenizer_for, write_random_checkpoint  # noqa: E402

RECIPE = REPO / "recipes" / "echat" / "stage3_empathy_lora_24gb" / "conf" / "train.yaml"
TARGET_GB = 20.0
SHAPES = {  # name: (task tag, utterances, seconds of audio, text tokens, speech tokens)
    "think30s": ("<S2TCHAT> <TEXT2TOKEN> <THINK>", 1, 30.0, 300, 750),
    "dynamic3700": ("<S2TCHAT> <THINKER>", 4, 30.0, 490, 0),
    "seq2048": ("<S2TCHAT> <THINKER>", 1, 30.0, None, 0),  # text length: fills the LLM input to --seq
}
MEMORY_SHAPES = ("think30s", "dynamic3700")
GB = 2 ** 30


def recipe_config() -> dict:
    from osum_echat.config import load_config
    return load_config(str(RECIPE))


def make_batch(shape: str, tokenizer, speech_token_num: int, seed: int = 0, n_text: int = None) -> dict:
    from osum_echat import tasks
    tag, n, seconds, shape_text, n_speech = SHAPES[shape]
    n_text = shape_text if n_text is None else n_text
    spec = tasks.TASKS[tag]
    g = torch.Generator().manual_seed(seed)
    frames = int(seconds * 100)
    vocab = len(tokenizer) - 1
    text = torch.randint(100, min(vocab, 150000), (n, n_text), generator=g)
    text[:, -1] = tokenizer.eos_token_id
    batch = dict(keys=[f"utt{i}" for i in range(n)], feats=torch.randn(n, frames, 80, generator=g),
                 feats_lengths=torch.full((n,), frames, dtype=torch.int32), target=text,
                 target_lengths=torch.full((n,), n_text, dtype=torch.int32), prompt=None, prompt_lengths=None,
                 history=[[] for _ in range(n)], output_type=spec.output_type, task=[tag] * n)
    if spec.speech_output:
        codes = torch.randint(0, speech_token_num - 1, (n, n_speech), generator=g)
        batch.update(speech_tokens=codes, speech_tokens_length=torch.full((n,), n_speech, dtype=torch.int32))
    return batch


def _nbytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is not None and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def fill_to(model, shape: str, tokenizer, speech_token_num: int, seq: int) -> dict:
    """A batch of `shape` whose LLM input is exactly `seq` positions long (the prompt part measured)."""
    probe = make_batch(shape, tokenizer, speech_token_num, n_text=8)
    with torch.no_grad():
        overhead = model.assemble(probe).inputs_embeds.shape[1] - 8
    if seq <= overhead:
        raise SystemExit(f"--seq {seq} is shorter than the prompt part of {shape} ({overhead} positions)")
    return make_batch(shape, tokenizer, speech_token_num, n_text=seq - overhead)


def measure(checkpoint: str, shape: str, seq: int = 2048) -> dict:
    """Runs in its own process."""
    from osum_echat.bin.train import build_optimizer
    from osum_echat.models import load_model
    from osum_echat.train.freeze import apply_fire_module

    config = recipe_config()
    tokenizer, tok_name = tokenizer_for(config)
    start = time.perf_counter()
    model, _ = load_model(config, checkpoint, "cpu", torch.bfloat16, tokenizer, strict=False)
    apply_fire_module(model, config["fire_module"])
    model.train()
    optimizer = build_optimizer(model, config)
    load_s = time.perf_counter() - start
    if SHAPES[shape][3] is None:
        batch = fill_to(model, shape, tokenizer, config["speech_token_num"], seq)
    else:
        batch = make_batch(shape, tokenizer, config["speech_token_num"])
    seen = {}

    def record(module, args, kwargs):
        seen.setdefault("shape", tuple(kwargs["inputs_embeds"].shape[:2]))

    model.base_llm().model.register_forward_pre_hook(record, with_kwargs=True)
    start = time.perf_counter()
    out = model(batch)
    forward_s = time.perf_counter() - start
    out["loss"].backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.get("grad_clip", 5))
    optimizer.step()
    step_s = time.perf_counter() - start
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    result = {
        "shape": shape, "tokenizer": tok_name, "load_s": load_s, "forward_s": forward_s, "step_s": step_s,
        "loss": float(out["loss"]), "grad_norm": float(grad_norm), "llm_batch": seen["shape"],
        "params": sum(p.numel() for p in model.parameters()), "trainable": sum(p.numel() for p in trainable),
        "lora": sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n),
        "weights_gb": _nbytes(model.parameters()) / GB, "grads_gb": _nbytes(p.grad for p in trainable) / GB,
        "optimizer_gb": _nbytes(state) / GB, "peak_rss_gb": peak_rss_gb(), "threads": torch.get_num_threads(),
    }
    optimizer.zero_grad(set_to_none=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="both", choices=["both", *SHAPES])
    ap.add_argument("--seq", type=int, default=2048, help="LLM input length of the seq2048 shape")
    ap.add_argument("--checkpoint", default=None, help="use this released-layout file instead of writing one")
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure:
        print(json.dumps(measure(args.measure, args.shape, args.seq)))
        return 0
    shapes = list(MEMORY_SHAPES) if args.shape == "both" else [args.shape]
    results = []
    with ScratchDir(args.tmp, args.keep) as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = os.path.join(tmp, "random_fullsize_bf16.pt")
            write_random_checkpoint(recipe_config(), ckpt)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for shape in shapes:
            done = subprocess.run([sys.executable, __file__, "--measure", ckpt, "--shape", shape,
                                   "--threads", str(args.threads), "--seq", str(args.seq)], env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    r0 = results[0]
    print(f"full size {r0['params'] / 1e9:.2f}B parameters, bf16; LoRA rank 64: {r0['lora'] / 1e6:.1f}M; "
          f"trainable (LoRA + adapter + speech embedding/head): {r0['trainable'] / 1e6:.1f}M; "
          f"tokenizer: {r0['tokenizer']}; CPU, {r0['threads']} threads")
    print(f"{'shape':12s}{'LLM B x L':>11s}{'weights':>9s}{'grads':>7s}{'optim':>7s}{'peak RSS':>10s}"
          f"{'step s':>8s}{'tokens/s':>10s}{'loss':>8s}")
    for r in results:
        b, L = r["llm_batch"]
        print(f"{r['shape']:12s}{f'{b} x {L}':>11s}{r['weights_gb']:9.2f}{r['grads_gb']:7.2f}"
              f"{r['optimizer_gb']:7.2f}{r['peak_rss_gb']:10.2f}{r['step_s']:8.0f}{b * L / r['step_s']:10.2f}"
              f"{r['loss']:8.3f}")
    worst = max(r["peak_rss_gb"] for r in results)
    print(f"peak memory (GiB) {worst:.2f}: target <= {TARGET_GB}: {'met' if worst <= TARGET_GB else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
