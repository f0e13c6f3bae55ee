"""Write the real Qwen2.5 tokenizer (Hugging Face tokenizer.json + tokenizer_config.json), offline.

The Qwen2 vocabulary ships on PyPI inside the `dashscope` wheel as `dashscope/resources/qwen.tiktoken`
(151,643 byte-level BPE ranks, base64 token per line). This tool fetches that wheel without its
dependencies (or reads one you give it), turns the ranks into a byte-level BPE with Qwen2's split rule
and NFC normaliser, and adds Qwen2.5's 22 special tokens (ids 151643..151664).

    python -m osum_echat.tools.qwen_tokenizer --out conf/qwen2.5-3b-instruct
    python -m osum_echat.tools.qwen_tokenizer --out DIR --wheel dashscope-1.25.20-py3-none-any.whl

Nothing derived from the wheel is committed (the output files are git-ignored); tools/install.sh runs this.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from ..tiny_llm import QWEN2_SPLIT, _write_json

DASHSCOPE = "dashscope==1.25.20"
RESOURCE = "dashscope/resources/qwen.tiktoken"
RESOURCE_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
NUM_RANKS = 151643

# Qwen2.5's special tokens from id 151643 on: (text, special). The tool-call and fill-in-the-middle
# markers are added tokens that Qwen2.5 does not mark special (decode(skip_special_tokens) keeps them).
SPECIALS = (
    [(t, True) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                         "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
                         "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")]
    + [(t, False) for t in ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                            "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")]
)
EOS, PAD = "<|im_end|>", "<|endoftext|>"


class TokenizerSourceError(RuntimeError):
    """The dashscope wheel or its qwen.tiktoken could not be had or is not the expected file."""


def fetch_wheel(dest: Path, spec: str = DASHSCOPE) -> Path:
    """pip download the dashscope wheel, no dependencies, into dest."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", spec, "-d", str(dest)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("dashscope-*.whl"))
    if run.returncode != 0 or not wheels:
        raise TokenizerSourceError(f"could not download {spec} ({' '.join(cmd)}): "
                                   f"{(run.stderr or run.stdout).strip().splitlines()[-1:] or 'no wheel'}")
    return wheels[-1]


def read_ranks(wheel: Path) -> dict[bytes, int]:
    """The mergeable ranks from the wheel's qwen.tiktoken, checked against the pinned file's hash."""
    try:
        with zipfile.ZipFile(wheel) as z:
            raw = z.read(RESOURCE)
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise TokenizerSourceError(f"{wheel}: cannot read {RESOURCE}: {e}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != RESOURCE_SHA256:
        raise TokenizerSourceError(f"{wheel}: {RESOURCE} has sha256 {digest}, expected {RESOURCE_SHA256} "
                                   f"(the file of {DASHSCOPE})")
    ranks = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if sorted(ranks.values()) != list(range(NUM_RANKS)):
        raise TokenizerSourceError(f"{wheel}: {RESOURCE} does not hold ranks 0..{NUM_RANKS - 1}")
    return ranks


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest map to chr(256 + n)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def vocab_and_merges(ranks: dict[bytes, int]):
    """Byte-level vocab {text: id} and the merge list that makes BPE encode as tiktoken does.

    tiktoken repeatedly joins the adjacent pair whose concatenation has the lowest rank. A merge list
    reproduces that when it holds every split (left, right) of every token into two tokens, ordered by
    the rank of the joined token: BPE then always applies the pair whose result ranks lowest, leftmost
    first on ties, exactly as tiktoken does. (Keeping one merge per token would miss pairs that tiktoken
    joins although the vocabulary was not trained that way.)"""
    b2u = byte_to_unicode()
    text = {tok: "".join(b2u[b] for b in tok) for tok in ranks}
    vocab = {text[tok]: rank for tok, rank in ranks.items()}
    merges = []
    for tok, rank in ranks.items():
        for i in range(1, len(tok)):
            left, right = tok[:i], tok[i:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], text[left], text[right]))
    merges.sort()
    return vocab, [(m[3], m[4]) for m in merges]


def build_tokenizer(ranks: dict[bytes, int]) -> Tokenizer:
    vocab, merges = vocab_and_merges(ranks)
    # ignore_merges: a piece that is itself a token is taken whole, as tiktoken does before any merging
    tok = Tokenizer(models.BPE(vocab, merges, unk_token=None, fuse_unk=False, byte_fallback=False,
                               ignore_merges=True))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in SPECIALS])
    first = tok.token_to_id(SPECIALS[0][0])
    if first != NUM_RANKS or tok.get_vocab_size() != NUM_RANKS + len(SPECIALS):
        raise RuntimeError(f"special tokens landed at {first}, expected {NUM_RANKS}")
    return tok


def tokenizer_config() -> dict:
    added = {str(NUM_RANKS + i): {"content": t, "lstrip": False, "rstrip": False, "normalized": False,
                                  "single_word": False, "special": s}
             for i, (t, s) in enumerate(SPECIALS)}
    return {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": added,
        "additional_special_tokens": [t for t, s in SPECIALS[1:] if s],
        "bos_token": None,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": 131072,
        "split_special_tokens": False,
    }


def write_qwen_tokenizer(out_dir: str | Path, wheel: str | Path | None = None) -> Path:
    """Write tokenizer.json + tokenizer_config.json into out_dir (config.json there is left as it is)."""
    out = Path(out_dir)
    if wheel is None:
        with tempfile.TemporaryDirectory(prefix="dashscope_") as tmp:
            ranks = read_ranks(fetch_wheel(Path(tmp)))
    else:
        ranks = read_ranks(Path(wheel))
    tok = build_tokenizer(ranks)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    _write_json(out / "tokenizer_config.json", tokenizer_config())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="conf/qwen2.5-3b-instruct", help="output directory")
    ap.add_argument("--wheel", help=f"a downloaded {DASHSCOPE} wheel (default: pip download it, no dependencies)")
    args = ap.parse_args(argv)
    try:
        print(write_qwen_tokenizer(args.out, args.wheel))
    except TokenizerSourceError as e:
        print(f"qwen_tokenizer: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
