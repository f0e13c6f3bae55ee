"""The real Qwen2.5 tokenizer, written offline from the dashscope wheel's qwen.tiktoken."""
from __future__ import annotations

import json
import random
import shutil
import unicodedata

import pytest

from osum_echat.tools import qwen_tokenizer as qt

FULL = "conf/qwen2.5-3b-instruct"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    try:
        return qt.fetch_wheel(tmp_path_factory.mktemp("wheel"))
    except qt.TokenizerSourceError as e:
        pytest.skip(f"the {qt.DASHSCOPE} wheel cannot be had here (no package index?): {e}")


@pytest.fixture(scope="module")
def qwen_dir(wheel, tmp_path_factory, repo_root):
    """An LLM folder like conf/qwen2.5-3b-instruct: its config.json plus the tokenizer the tool writes."""
    out = tmp_path_factory.mktemp("qwen2.5")
    shutil.copy(repo_root / FULL / "config.json", out / "config.json")
    assert qt.main(["--out", str(out), "--wheel", str(wheel)]) == 0
    return out


@pytest.fixture(scope="module")
def tok(qwen_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen_dir))


@pytest.fixture(scope="module")
def tiktoken_encoding(wheel):
    import tiktoken

    ranks = qt.read_ranks(wheel)
    return tiktoken.Encoding(name="qwen_check", pat_str=qt.QWEN2_SPLIT, mergeable_ranks=ranks,
                             special_tokens={t: qt.NUM_RANKS + i for i, (t, _) in enumerate(qt.SPECIALS)})


def test_ids_upstream_hard_codes(tok):
    assert tok.encode("&&", add_special_tokens=False) == [7672]
    assert tok.encode("年龄", add_special_tokens=False) == [102185]
    assert tok.encode("CHILD", add_special_tokens=False) == [99119]


def test_special_tokens(tok):
    names = {151643: "<|endoftext|>", 151644: "<|im_start|>", 151645: "<|im_end|>", 151646: "<|object_ref_start|>",
             151652: "<|vision_start|>", 151656: "<|video_pad|>", 151657: "<tool_call>", 151658: "</tool_call>",
             151659: "<|fim_prefix|>", 151664: "<|file_sep|>"}
    assert {i: tok.convert_ids_to_tokens(i) for i in names} == names
    assert len(tok) == 151665
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token, tok.pad_token_id) == \
        ("<|im_end|>", 151645, "<|endoftext|>", 151643)
    ids = tok.encode("<|im_start|>user\n你好<|im_end|>", add_special_tokens=False)
    assert ids[0] == 151644 and ids[-1] == 151645 and len(ids) == 5
    assert tok.decode(ids, skip_special_tokens=True) == "user\n你好"


@pytest.mark.parametrize("text", [
    "请转录这段音频。说话人的情绪是什么？", "The quick brown fox doesn't jump over the lazy dog!",
    "我今天 very happy，because 天气很好 :) 123,456.78 元", "  leading and trailing spaces  \n\n\tend",
    "<HAPPY><think>用户语气平静<think end>好的，我明白了。", "emoji 😀🎉 and café naïve Ünïcödé"])
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_tokenizer_and_config_agree(qwen_dir, tok):
    from osum_echat.tokenizer import TextIds, load_tokenizer

    config = json.loads((qwen_dir / "config.json").read_text())
    assert len(tok) <= config["vocab_size"]
    assert tok.eos_token_id == config["eos_token_id"]
    assert tok.convert_tokens_to_ids("<|endoftext|>") == config["bos_token_id"]
    ids = TextIds.from_tokenizer(load_tokenizer(str(qwen_dir)))
    # upstream's extra "[PAD]" lands inside the padded embedding table, never out of range
    assert ids.pad == len(tok) < config["vocab_size"]
    assert (ids.eos, ids.im_start, ids.unk_tag) == (151645, 151644, 7672)


def _varied_strings(n: int, seed: int = 0):
    pools = [
        "hello world the of and to in is you that it he was for on are as with his they I at be this".split(),
        list("的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生自会那后能对着事其里所去行过家十用发天如然作方成者多日都三小军二无同么经法当起与好看学进种将还分此心前面又定见只主没公从"),
        ["年龄", "情绪", "说话人", "开心", "悲伤", "成年人", "你好呀姐妹", "专家服务系统", "～", "。", "，", "？", "！", "：", "“", "”"],
        ["0", "7", "42", "2025", "3.14", "1,000", "１２３", "½", "Ⅻ"],
        ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "don't", "I'M", "we've"],
        ["<HAPPY>", "<think>", "<think end>", "<&&>", "&&", "<CHILD>", "CHILD", "<TRANSCRIBE>", "[PAD]", "<|x|>"],
        [" ", "  ", "   ", "\n", "\n\n", "\r\n", "\t", " \n ", "\u3000", "\u00a0"],
        ["!!", "...", "--", "==>", "(a+b)*c", "{\"k\": [1, 2]}", "def f(x):\n    return x", "#include <stdio.h>", "http://x.y/z?q=1"],
        ["café", "cafe\u0301", "naïve", "Ünïcödé", "Straße", "ﬁ", "こんにちは", "カタカナ", "안녕하세요", "مرحبا", "Привет", "שלום", "😀", "🎉", "👍🏽", "🇨🇳"],
    ]
    rng = random.Random(seed)
    for _ in range(n):
        parts = [rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 12))]
        yield "".join(p + (" " if rng.random() < 0.4 else "") for p in parts)


def test_same_ids_as_tiktoken(tok, tiktoken_encoding):
    """Hundreds of varied strings encode exactly as tiktoken encodes with the same ranks and split rule
    (after Qwen2's NFC normalisation, which tiktoken does not apply)."""
    strings = list(_varied_strings(400))
    assert len(set(strings)) > 350
    mismatch = [s for s in strings
                if tok.encode(s, add_special_tokens=False)
                != tiktoken_encoding.encode_ordinary(unicodedata.normalize("NFC", s))]
    assert mismatch == []


def test_full_size_pipeline_runs_through_it(qwen_dir, shared_dir, upstream_root, tiktoken_encoding, capsys):
    """conf/ct_config.yaml (full size) reads upstream's sample data with the real tokenizer, end to end."""
    from osum_echat.bin import inspect_data

    fake = shared_dir / "upstream_fake_data"
    for data_type, data, root in (("raw", fake / "raw/data.list", upstream_root),
                                  ("combine", fake / "combine/combines_list.txt", upstream_root)):
        inspect_data.main(["--config", "conf/ct_config.yaml", "--data_type", data_type, "--data", str(data),
                           "--root", str(root), "--override", f"llm_path={qwen_dir}"])
        rows = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
        assert rows[-1] == {"samples": 10, "skipped": {}}
    first = json.loads((fake / "raw/data.list").read_text(encoding="utf-8").splitlines()[0])
    # the think-chat target: <think>think_str<think end>answer, then <|im_end|>
    target = f"<think>{first['extra']['think_str']}<think end>{first['txt']}"
    inspect_data.main(["--config", "conf/ct_config.yaml", "--data_type", "raw", "--data", str(fake / "raw/data.list"),
                       "--root", str(upstream_root), "--override", f"llm_path={qwen_dir}"])
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["num_label_tokens"] == len(tiktoken_encoding.encode_ordinary(target)) + 1
    assert row["num_speech_tokens"] == len(first["extra"]["speech_token"]) + 2


@pytest.fixture
def upstream_root(shared_dir, tmp_path):
    (tmp_path / "up" / "common_utils").mkdir(parents=True)
    (tmp_path / "up" / "common_utils" / "fake_data").symlink_to(shared_dir / "upstream_fake_data")
    return tmp_path / "up"


def test_full_size_training_batches_through_it(qwen_dir, shared_dir, upstream_root, tok):
    """The full-size config in train mode (dynamic batches of max_seq_in_batch 3700, spec_aug, task
    conversions) over upstream's sample list, tokenized by the real tokenizer."""
    from osum_echat.config import load_config
    from osum_echat.data.dataset import build_dataset

    cfg = load_config("conf/ct_config.yaml", [f"llm_path={qwen_dir}", "dataset_conf.multi_num=1"])
    ds = build_dataset(cfg, "raw", str(shared_dir / "upstream_fake_data/raw/data.list"), tok,
                       root=str(upstream_root), mode="train", rank=0, world_size=1)
    batches = list(ds)
    assert sum(len(b.keys) for b in batches) == 10 and ds.skip_counts() == {}
    assert len(batches) > 1  # 10 samples of ~700 estimated tokens do not fit one 3700-token batch
    labels = [int(n) for b in batches for n in b.target_lengths]
    assert all(0 < n < 200 for n in labels)  # real Qwen ids: ~114 tokens for a ~160-character target
