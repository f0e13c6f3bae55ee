"""Full-size build + load for inference: peak host memory and time to ready.

  python bench/bench_fullsize.py [--dtype bfloat16] [--tmp /tmp] [--keep] [--checkpoint CKPT]

Writes random weights once in the released format and layout (conf/ct_config.yaml:
Qwen2.5-3B + whisper-medium-size encoder, 3.46B parameters, bf16, ~6.9 GB; under
--tmp, deleted afterwards unless --keep), then in a fresh process builds the model
and loads the file for inference (osum_echat.models.load_for_inference) and runs
one short forward (1 s of audio through the encoder and adapter, 16 tokens through
the LLM), which touches every weight. Prints peak RSS / checkpoint size (target
<= 1.3) and the time to ready. The file was just written, so it is read from the
page cache: time to ready is the warm-cache figure.
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
from fullsize_common import (REPO, ScratchDir, full_config, peak_rss_gb, tokenizer_for,  # noqa: E402
                             write_random_checkpoint)

TARGET = 1.3


def measure(checkpoint: str, dtype: str) -> dict:
    """Runs in its own process: build + load + first forward."""
    from osum_echat.models import load_for_inference
    config = full_config()
    tokenizer, tok_name = tokenizer_for(config)
    start = time.perf_counter()
    model = load_for_inference(config, checkpoint, "cpu", getattr(torch, dtype), tokenizer)
    ready = time.perf_counter() - start
    rss_ready = peak_rss_gb()
    start = time.perf_counter()
    with torch.no_grad():
        speech, _ = model.embed_speech(torch.randn(1, 100, 80), torch.tensor([100]))
        ids = torch.arange(16)[None] + 1000
        embeds = torch.cat([speech, model.embed_tokens(ids)], 1)
        out = model.base_llm().model(inputs_embeds=embeds, use_cache=False).last_hidden_state
        logits = model.lm_head(out[:, -1])
    forward = time.perf_counter() - start
    assert torch.isfinite(logits.float()).all(), "forward gave non-finite logits"
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, "ready_s": ready, "rss_at_ready_gb": rss_ready, "first_forward_s": forward,
            "peak_rss_gb": peak_rss_gb(), "tokenizer": tok_name, "threads": torch.get_num_threads()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--tmp", default=None, help="folder for the random checkpoint (default: /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the written checkpoint")
    ap.add_argument("--checkpoint", default=None, help="measure this file instead of writing one")
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.dtype)))
        return 0
    with ScratchDir(args.tmp, args.keep) as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = os.path.join(tmp, "random_fullsize_bf16.pt")
            start = time.perf_counter()
            write_random_checkpoint(full_config(), ckpt)
            print(f"wrote {ckpt}: {os.path.getsize(ckpt) / 1e9:.2f} GB in {time.perf_counter() - start:.0f} s")
        size_gb = os.path.getsize(ckpt) / 2 ** 30
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        out = subprocess.run([sys.executable, __file__, "--measure", ckpt, "--dtype", args.dtype],
                             env=env, check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        if args.keep:
            print(f"kept {ckpt}")
    ratio = r["peak_rss_gb"] / size_gb
    print(f"model: {r['params'] / 1e9:.2f}B parameters, loaded as {args.dtype}; tokenizer: {r['tokenizer']}")
    print(f"checkpoint file      {size_gb:6.2f} GiB")
    print(f"peak RSS at ready    {r['rss_at_ready_gb']:6.2f} GiB   (build + load, {r['ready_s']:.1f} s)")
    print(f"peak RSS after 1st   {r['peak_rss_gb']:6.2f} GiB   (first forward {r['first_forward_s']:.1f} s, "
          f"{r['threads']} threads)")
    print(f"peak RSS / file size {ratio:6.2f}    target <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
