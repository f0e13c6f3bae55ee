"""The LLM's text tokenizer, and the special ids the rest of the code needs, looked up by name."""
from __future__ import annotations

from dataclasses import dataclass

from .config import check_llm_path

PAD_TOKEN = "[PAD]"
UNK_TAG = "&&"  # upstream marks "no label here" with "<&&>"; the "&&" token is left out of the loss


def load_tokenizer(llm_path: str):
    """AutoTokenizer for `llm_path` with upstream's extra "[PAD]" pad token.

    Upstream quirk kept: "[PAD]" is added as a new token without resizing the LLM embeddings; the
    id lands inside Qwen's padded vocabulary (151936 rows > 151665 tokens), so it never indexes out
    of range, and padded positions are masked anyway.
    """
    from transformers import AutoTokenizer

    path = check_llm_path(llm_path)
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.add_special_tokens({"pad_token": PAD_TOKEN})
    tok.padding_side = "right"
    return tok


@dataclass(frozen=True)
class TextIds:
    eos: int  # tokenizer.eos_token_id: "<|im_end|>" for Qwen instruct models
    endoftext: int
    im_start: int
    im_end: int
    unk_tag: int  # the "&&" token (7672 in Qwen's vocabulary)
    pad: int

    @classmethod
    def from_tokenizer(cls, tok) -> "TextIds":
        def one(token: str) -> int:
            ids = tok.convert_tokens_to_ids([token])
            if not ids or ids[0] is None or ids[0] == tok.unk_token_id:
                raise ValueError(f"tokenizer has no token {token!r}; a Qwen2 tokenizer is required")
            return ids[0]

        unk = tok(UNK_TAG, add_special_tokens=False)["input_ids"]
        if len(unk) != 1:
            raise ValueError(f"tokenizer splits {UNK_TAG!r} into {len(unk)} tokens; a Qwen2 tokenizer is required")
        return cls(eos=tok.eos_token_id, endoftext=one("<|endoftext|>"), im_start=one("<|im_start|>"),
                   im_end=one("<|im_end|>"), unk_tag=unk[0], pad=tok.pad_token_id)
