"""Build the tiny offline Qwen2 LLM directory used by tests, the demo and quick experiments.

The directory holds a Qwen2 `config.json` and a byte-level BPE tokenizer trained here on a small
built-in English + Chinese corpus. It has Qwen's chat special tokens (`<|endoftext|>`,
`<|im_start|>`, `<|im_end|>`), the same pre-tokenisation rule as Qwen2, and the token "&&" that
upstream uses as its "unknown tag" marker. No weights are written: OSUM-EChat initialises the LLM
from its config (as upstream does) or loads weights from a checkpoint.

    python -m osum_echat.tiny_llm --out conf/tiny_llm

Building twice gives byte-identical files (tested).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from tokenizers import AddedToken

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 3000  # BPE vocabulary before the special tokens

# Qwen2's split rule: contractions, letter runs, single digits, punctuation runs, newlines, spaces.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

ENGLISH = """
the quick brown fox jumps over the lazy dog. she sells sea shells by the sea shore.
i am very happy to see you today. why are you so sad? please tell me what happened.
good morning, how are you feeling? i feel a little tired but i am fine, thank you.
the weather is nice and the sun is shining. it is raining outside and the wind is cold.
can you help me with my homework? of course, what do you need? let us talk about music.
a man and a woman are speaking. the child is laughing loudly. the old lady speaks slowly.
transcribe the audio. what is the emotion of the speaker? what is the gender of the speaker?
what is the age of the speaker? describe the speaking style. answer the question in text.
one two three four five six seven eight nine ten eleven twelve hundred thousand.
yes no maybe always never sometimes often today tomorrow yesterday morning evening night.
angry happy sad surprised fearful disgusted neutral calm excited worried lonely proud.
male female child adult old young fast slow loud quiet whisper shout sing read.
i understand how you feel. that sounds hard. do not worry, everything will be fine.
think about the question first, then answer. the user sounds upset, so reply gently.
"""

CHINESE = """
你好，很高兴见到你。今天天气怎么样？我今天很开心。你为什么这么难过？请告诉我发生了什么。
请转录这段音频。说话人的情绪是什么？说话人的性别是什么？说话人的年龄是多少？
我有点累了，但是我很好，谢谢你。外面在下雨，风很冷。我们来聊聊音乐吧。
一二三四五六七八九十百千万。是的，不是，也许，总是，从不，有时，明天，昨天，早上，晚上。
生气，开心，伤心，惊讶，害怕，厌恶，中立，平静，兴奋，担心，孤独，骄傲。
男性，女性，儿童，成年人，老年人，说话很快，说话很慢，声音很大，声音很小。
我理解你的感受。这听起来很难受。别担心，一切都会好起来的。先思考问题，然后回答。
"""

TAGS = """
<TRANSCRIBE> <EMOTION> <GENDER> <AGE> <STYLE> <CAPTION> <ALIGN> <PUNCTUATION> <AUDIO>
<S2TCHAT> <S2TCHAT_FAKE> <THINKER> <THINK> <TEXT2TEXT> <TEXT2TOKEN> <STREAMING> <HISTORY>
<think> <think end> </think> && <NONE> <MALE> <FEMALE> <CHILD> <ADULT> <OLD>
<HAPPY> <SAD> <ANGRY> <NEUTRAL> <SURPRISE> <FEAR> <DISGUST> <YOUTH> <MIDDLE_AGE>
"""


def corpus() -> list[str]:
    lines = [ln.strip() for text in (ENGLISH, CHINESE, TAGS) for ln in text.strip().splitlines()]
    # Single Chinese characters, space separated, so that merges form per-character tokens rather than
    # whole sentences (Chinese has no spaces, so Qwen2's split keeps a sentence as one piece).
    chars = sorted({c for c in CHINESE if "\u4e00" <= c <= "\u9fff"})
    # Repeat so that frequent pieces ("&&", tags, common words, characters) get merges of their own.
    return [ln for ln in lines if ln] * 5 + [" ".join(chars)] * 50


def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def llm_config(vocab_size: int, ids: dict[str, int]) -> dict:
    """A Qwen2ForCausalLM config at tiny size, laid out like Qwen2.5-3B-Instruct's (tied embeddings)."""
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "max_window_layers": 2,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
        "use_cache": True,
        "vocab_size": vocab_size,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "torch_dtype": "float32",
    }


def tokenizer_config(ids: dict[str, int]) -> dict:
    added = {
        str(ids[t]): {"content": t, "lstrip": False, "rstrip": False, "normalized": False,
                      "single_word": False, "special": True}
        for t in SPECIAL_TOKENS
    }
    return {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": 4096,
        "split_special_tokens": False,
    }


def build_tiny_llm(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    # Room for upstream's extra "[PAD]" token (added without resizing) and a round size, as Qwen does.
    vocab_size = int(math.ceil((tok.get_vocab_size() + 1) / 64) * 64)
    tok.save(str(out / "tokenizer.json"))
    _write_json(out / "tokenizer_config.json", tokenizer_config(ids))
    _write_json(out / "config.json", llm_config(vocab_size, ids))
    _write_json(out / "generation_config.json",
                {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
                 "pad_token_id": ids["<|endoftext|>"]})
    return out


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="conf/tiny_llm", help="output directory")
    args = parser.parse_args()
    print(build_tiny_llm(args.out))


if __name__ == "__main__":
    main()
