import json

from osum_echat.tokenizer import TextIds


def test_tiny_llm_is_reproducible(tiny_llm_dir, repo_root):
    """The committed conf/tiny_llm equals a fresh offline build, file for file."""
    committed = repo_root / "conf/tiny_llm"
    names = sorted(p.name for p in committed.iterdir() if p.is_file())
    assert names == sorted(p.name for p in tiny_llm_dir.iterdir())
    for name in names:
        assert (committed / name).read_bytes() == (tiny_llm_dir / name).read_bytes(), name


def test_tiny_llm_loads_with_transformers(tiny_llm_dir):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llm_dir))
    cfg = AutoConfig.from_pretrained(str(tiny_llm_dir))
    assert cfg.model_type == "qwen2" and cfg.vocab_size > len(tok)
    model = AutoModelForCausalLM.from_config(cfg)
    ids = tok("hello <|im_end|>", return_tensors="pt")["input_ids"]
    assert model(input_ids=ids).logits.shape[-1] == cfg.vocab_size


def test_chat_special_tokens_and_languages(tiny_tokenizer):
    tok = tiny_tokenizer
    text = "<|im_start|>system\nYou are OSUM-chat.<|im_end|>\n<|im_start|>user\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    special = TextIds.from_tokenizer(tok)
    assert ids[0] == special.im_start and special.im_end in ids
    assert tok.eos_token == "<|im_end|>" and special.eos == special.im_end
    for s in ["transcribe the audio please", "你好，今天天气怎么样？", "mixed 中文 and English <think>"]:
        ids = tok(s, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == s
        assert len(ids) < len(s.encode("utf-8"))  # merges exist for both languages
    # Upstream's "<&&>" marker: "&&" is one token between "<" and ">", as in Qwen's vocabulary.
    pieces = tok.convert_ids_to_tokens(tok("<&&>", add_special_tokens=False)["input_ids"])
    assert pieces == ["<", "&&", ">"] and tok.convert_tokens_to_ids("&&") == special.unk_tag


def test_pad_token_added_like_upstream(tiny_tokenizer, repo_root):
    cfg = json.loads((repo_root / "conf/tiny_llm/config.json").read_text())
    special = TextIds.from_tokenizer(tiny_tokenizer)
    assert tiny_tokenizer.pad_token == "[PAD]"
    assert special.pad == len(tiny_tokenizer) - 1 < cfg["vocab_size"]
    assert len({special.eos, special.endoftext, special.im_start, special.pad, special.unk_tag}) == 5
