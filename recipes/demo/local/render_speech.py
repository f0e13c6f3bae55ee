"""Render a few TTS / spoken-dialogue utterances of a demo stage to wavs with a tiny token2wav directory.

    python recipes/demo/local/render_speech.py --stage_dir exp/demo/stage2 \
        --lists exp/demo/data/lists/s2_tts.jsonl exp/demo/data/lists/s2_s2s.jsonl --num 2 \
        --token2wav_dir exp/demo/token2wav_tiny

The stage's final.pt decodes the first `--num` utterances of each list greedily (osum_echat.infer.batch.run);
their speech tokens go through token2wav (deterministic mode) into `STAGE/render/wav/KEY.wav`. The tiny
token2wav directory (written with `make-tiny` when absent) has random weights, so the audio is not speech:
the check is that every wav exists at 22,050 Hz with 256 * floor(T * 22050 / (25 * 256)) samples for its T
tokens. Exits 1 when nothing rendered or a file is wrong; an utterance without speech tokens is counted.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))


def decode_speech(stage_dir: Path, lists: list, num: int, out_dir: Path) -> list:
    import torch

    from osum_echat.config import load_config
    from osum_echat.infer.batch import run
    from osum_echat.models import build_model
    from osum_echat.models.checkpoint import load_checkpoint
    from osum_echat.tokenizer import load_tokenizer

    shutil.rmtree(out_dir, ignore_errors=True)  # batch inference resumes: start from nothing for this model
    out_dir.mkdir(parents=True, exist_ok=True)
    picked = out_dir / "render.list"
    with open(picked, "w", encoding="utf-8") as f:
        for path in lists:
            with open(path, encoding="utf-8") as src:
                for _, line in zip(range(num), src):
                    f.write(line if line.endswith("\n") else line + "\n")
    config = load_config(stage_dir / "train.yaml")
    tokenizer = load_tokenizer(config["llm_path"])
    model = build_model(config, device="cpu", tokenizer=tokenizer)
    load_checkpoint(model, stage_dir / "final.pt", strict=True)
    with torch.no_grad():
        run(model.eval(), tokenizer, config, "raw", str(picked), str(out_dir / "text"))
    with open(out_dir / "text.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage_dir", required=True)
    ap.add_argument("--lists", nargs="+", required=True)
    ap.add_argument("--num", type=int, default=2)
    ap.add_argument("--token2wav_dir", required=True)
    args = ap.parse_args(argv)

    import soundfile

    from osum_echat.bin.token2wav import make_tiny
    from osum_echat.infer.audio_io import write_wav
    from osum_echat.token2wav import Token2Wav

    stage_dir, t2w_dir = Path(args.stage_dir), Path(args.token2wav_dir)
    if not (stage_dir / "final.pt").is_file():
        print(f"render: no final.pt in {stage_dir}: NOT met")
        return 1
    if not (t2w_dir / "cosyvoice.yaml").is_file():
        make_tiny(t2w_dir)
    t2w = Token2Wav.from_dir(t2w_dir)
    out_dir = stage_dir / "render"
    records = decode_speech(stage_dir, args.lists, args.num, out_dir)
    ok, no_tokens = 0, []
    for rec in records:
        tokens = rec.get("speech_tokens") or []
        if not tokens:
            no_tokens.append(rec["key"])
            continue
        path = out_dir / "wav" / f"{rec['key']}.wav"
        write_wav(path, t2w.synthesize(tokens, noise=False), t2w.sample_rate)
        info = soundfile.info(str(path))
        want = 256 * math.floor(len(tokens) * 22050 / (25 * 256))
        good = info.samplerate == 22050 and info.frames == want
        ok += good
        print(f"  {rec['key']} ({rec['task']}): {len(tokens)} tokens -> {path} {info.frames} samples at "
              f"{info.samplerate} Hz (expected {want}): {'ok' if good else 'WRONG'}")
    met = ok > 0 and ok == len(records) - len(no_tokens)
    print(f"render: {ok}/{len(records)} decoded utterances rendered with the right length and rate"
          + (f"; {len(no_tokens)} decoded no speech tokens ({', '.join(no_tokens)})" if no_tokens else "")
          + f": {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
