"""Decode flags shared by the command lines (bin/infer.py, the batch script, chat).

    add_decode_args(ap)                    --greedy --decode_batch_size --prompt_style --packed_weights
                                           + one flag per control
    decode_options_from_args(args) -> dict(overrides=..., greedy=..., prompt_style=..., batch_size=...,
                                           packed_weights=...)
    Decoder(model, **decode_options_from_args(args))

A control flag left unset keeps the task table's preset (upstream's per-task setting).
"""
from __future__ import annotations

import argparse

from osum_echat.generation.decode import DEFAULT_PROMPT_STYLE
from osum_echat.generation.packed_linear import MODES as PACK_MODES
from osum_echat.tasks import PROMPT_STYLES


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# (flag, type, help); the flag is the DecodeConfig field name
_CONTROLS = [
    ("max_text_tokens", int, "most ids the text phase may generate"),
    ("max_speech_tokens", int, "most ids the speech phase may generate"),
    ("max_total_tokens", int, "most ids generated in all (upstream: 2000 for TTS and S2S)"),
    ("do_sample", _bool, "true: sample, false: argmax"),
    ("temperature", float, "sampling temperature"),
    ("top_k", int, "sample among the k best ids (0: off)"),
    ("top_p", float, "nucleus sampling mass (1: off)"),
    ("repetition_penalty", float, "text phase, over the generated text ids (transformers' rule)"),
    ("speech_repetition_penalty", float, "speech phase, over generated codes (span marker excluded)"),
    ("speech_repeat_blocking", _bool, "ban a code after 5 repeats in a row or 5 in the last 8 (1446: 10, 10/13)"),
    ("tag_cot_constraint", _bool, "after '年龄为:<' only the age labels may follow (upstream S2S)"),
    ("max_audio_frames", int, "longest input audio in 10 ms frames (3000 = Whisper's 30 s)"),
    ("seed", int, "base seed; each utterance samples from a seed of this and its key"),
]


def add_decode_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("decoding (unset controls keep each task's upstream preset)")
    g.add_argument("--greedy", action="store_true", help="argmax everywhere (do_sample off for every task)")
    g.add_argument("--decode_batch_size", type=int, default=1, help="items decoded together in one KV cache")
    g.add_argument("--prompt_style", default=DEFAULT_PROMPT_STYLE, choices=PROMPT_STYLES,
                   help="train: the sequence training built (default); upstream_infer: the one upstream's "
                        "generate functions build (to reproduce upstream's published numbers)")
    g.add_argument("--packed_weights", default="auto", choices=PACK_MODES,
                   help="CPU, decode batch >= 4: multiply the batched steps with oneDNN-packed weight copies "
                        "(~2x faster steps, the weights' memory again); auto: only when that fits in half the "
                        "available memory")
    for name, typ, text in _CONTROLS:
        extra = dict(nargs="?", const=True) if typ is _bool else {}  # a bare --do_sample means true
        g.add_argument(f"--{name}", type=typ, default=None, help=text, **extra)


def decode_options_from_args(args) -> dict:
    overrides = {name: getattr(args, name) for name, _, _ in _CONTROLS if getattr(args, name, None) is not None}
    return dict(overrides=overrides, greedy=bool(args.greedy), prompt_style=args.prompt_style,
                batch_size=int(args.decode_batch_size), packed_weights=getattr(args, "packed_weights", "auto"))
