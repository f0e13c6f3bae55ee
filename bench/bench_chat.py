"""Chat runtime at tiny size: load time, per-turn latency per task, host memory of one vs two checkpoints.

    python bench/bench_chat.py [--config conf/tiny_ct_config.yaml] [--checkpoint A.pt --checkpoint_b B.pt]
                               [--token2wav_dir D] [--turns 3]

Without checkpoints it builds a random tiny model and a B that differs from A in every tensor (the
worst case: stage 3 trained all weights). Memory is measured in fresh processes, side by side:
  one        ChatPipeline with A
  shared     ChatPipeline with A and --checkpoint_b B (one skeleton + B's differing tensors)
  two        two ChatPipelines (what upstream's web demo does: two full models)
and printed as VmRSS after loading, with the weights' own bytes, so the full-size cost can be read
off (the skeleton's share grows with the model; the process overhead does not).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def measure(mode: str, config: str, a: str, b: str, t2w) -> dict:
    """Runs in a fresh process: load as `mode`, report RSS and weight bytes."""
    import torch
    torch.set_num_threads(1)
    from bench_dataloader import rss_mb  # noqa: E402 (bench/ is on sys.path: this script's folder)
    from osum_echat.infer.runtime import ChatPipeline

    base = rss_mb()
    start = time.perf_counter()
    pipes = [ChatPipeline.from_files(config, a, t2w, device="cpu", checkpoint_b=b if mode == "shared" else None)]
    if mode == "two":
        pipes.append(ChatPipeline.from_files(config, b, t2w, device="cpu"))
    load = time.perf_counter() - start
    weights = sum(p.numel() * p.element_size() for pipe in pipes for p in pipe.model.state_dict().values())
    aside = pipes[0].variants.aside_bytes() if pipes[0].variants else 0
    return {"mode": mode, "rss_mb": rss_mb(), "rss_before_mb": base, "load_s": load,
            "weights_mb": weights / 2**20, "aside_mb": aside / 2**20}


def latency(config: str, a: str, t2w, wav: str, turns: int) -> None:
    import torch
    torch.set_num_threads(1)
    from osum_echat.infer.conversation import Conversation
    from osum_echat.infer.runtime import HELPER_TASKS, ChatPipeline
    from osum_echat import tasks as task_table

    start = time.perf_counter()
    pipe = ChatPipeline.from_files(config, a, t2w, device="cpu",
                                   decode_options={"overrides": {"max_text_tokens": 32, "max_speech_tokens": 100}})
    print(f"load (config + checkpoint{' + token2wav' if t2w else ''}): {time.perf_counter() - start:.2f} s")
    print("per-turn latency (median of {} runs; caps 32 text / 100 speech tokens), ms:".format(turns))
    print(f"  {'helper':11s} {'task':34s} {'encoder':>8s} {'LLM':>8s} {'token2wav':>9s} {'1st audio':>9s} {'total':>8s}")
    for name, tag in HELPER_TASKS.items():
        spec = task_table.TASKS[tag]
        runs = [pipe.run(tag, wav=wav if spec.speech_input else None,
                         text=None if spec.speech_input else "hello there how are you", key=f"k{i}")
                for i in range(turns)]
        cell = {k: statistics.median(r.timings.get(k, float("nan")) for r in runs) * 1000
                for k in ("encoder", "llm", "token2wav", "first_audio", "total")}
        print(f"  {name:11s} {tag:34s} {cell['encoder']:8.1f} {cell['llm']:8.1f} {cell['token2wav']:9.1f} "
              f"{cell['first_audio']:9.1f} {cell['total']:8.1f}")
    conv = Conversation(pipe)
    times = []
    for i in range(3):
        r = conv.say(wav=wav)
        times.append((r.history_turns, r.timings["total"] * 1000))
    print("conversation (s2s), turn: history turns seen, total ms: "
          + ", ".join(f"{i + 1}: {h}, {t:.0f}" for i, (h, t) in enumerate(times)))


def make_inputs(tmp: str, config: str):
    import numpy as np
    import soundfile as sf
    import torch
    from osum_echat.config import load_config
    from osum_echat.models import build_model
    from osum_echat.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    state = build_model(load_config(config)).state_dict()
    save_checkpoint(state, os.path.join(tmp, "a.pt"))
    save_checkpoint({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, os.path.join(tmp, "b.pt"))
    t = np.arange(32000) / 16000
    sf.write(os.path.join(tmp, "q.wav"), (0.2 * np.sin(2 * np.pi * 300 * t)).astype("float32"), 16000)
    return os.path.join(tmp, "a.pt"), os.path.join(tmp, "b.pt"), os.path.join(tmp, "q.wav")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="conf/tiny_ct_config.yaml")
    ap.add_argument("--checkpoint")
    ap.add_argument("--checkpoint_b")
    ap.add_argument("--token2wav_dir")
    ap.add_argument("--wav")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--_measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._measure:
        print(json.dumps(measure(args._measure, args.config, args.checkpoint, args.checkpoint_b, args.token2wav_dir)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        a, b, wav = make_inputs(tmp, args.config)
        a, b, wav = args.checkpoint or a, args.checkpoint_b or b, args.wav or wav
        t2w = args.token2wav_dir
        if t2w is None:
            from osum_echat.bin.token2wav import make_tiny
            t2w = str(make_tiny(os.path.join(tmp, "t2w")))
        print(f"config {args.config}, checkpoints {a} / {b}, token2wav {t2w}")
        rows = []
        for mode in ("one", "shared", "two"):
            out = subprocess.run([sys.executable, __file__, "--_measure", mode, "--config", args.config,
                                  "--checkpoint", a, "--checkpoint_b", b, "--token2wav_dir", t2w],
                                 capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        one = rows[0]
        print("host memory after loading (fresh process each; VmRSS):")
        for r in rows:
            print(f"  {r['mode']:7s} RSS {r['rss_mb']:8.1f} MB (+{r['rss_mb'] - one['rss_mb']:6.1f} vs one)  "
                  f"model weights {r['weights_mb']:7.2f} MB  kept aside {r['aside_mb']:6.2f} MB  load {r['load_s']:.2f} s")
        print(f"  second checkpoint costs: shared {rows[1]['rss_mb'] - one['rss_mb']:.1f} MB, "
              f"two models {rows[2]['rss_mb'] - one['rss_mb']:.1f} MB; weights of one model {one['weights_mb']:.2f} MB")
        latency(args.config, a, t2w, wav, args.turns)


if __name__ == "__main__":
    main()
