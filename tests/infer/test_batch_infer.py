import json
import subprocess

import numpy as np
import soundfile as sf
import torch

from osum_echat.config import load_config
from osum_echat.models import build_model
from osum_echat.models.checkpoint import save_checkpoint


def test_infer_script_splits_decodes_and_merges_in_order(tmp_path, tiny_tokenizer, repo_root):
    t = np.arange(8000) / 16000
    for i in range(5):
        sf.write(tmp_path / f"{i}.wav", (0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype("float32"), 16000)
    rows = [{"key": f"utt{i}", "wav": f"{i}.wav", "txt": "hello world", "task": "<TRANSCRIBE>"} for i in range(5)]
    rows.insert(2, {"key": "broken", "wav": "missing.wav", "txt": "x", "task": "<TRANSCRIBE>"})
    (tmp_path / "data.list").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(0)
    model = build_model(load_config(repo_root / "conf/tiny_ct_config.yaml"), tokenizer=tiny_tokenizer)
    save_checkpoint(model.state_dict(), tmp_path / "model.pt")
    out = tmp_path / "infer/text"
    r = subprocess.run(["bash", "infer_with_shards_or_raw.sh", "--checkpoint", str(tmp_path / "model.pt"),
                        "--data", str(tmp_path / "data.list"), "--output", str(out), "--nj", "2",
                        "--device", "cpu", "--extra", "--max_text_tokens 4"],
                       capture_output=True, text=True, cwd=repo_root, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    keys = [line.split("\t")[0] for line in out.read_text().splitlines()]
    assert keys == [f"utt{i}" for i in range(5)]  # input order, the broken entry skipped
    records = [json.loads(line) for line in (tmp_path / "infer/text.jsonl").read_text().splitlines()]
    assert [r["ref"] for r in records] == ["hello world"] * 5
    summary = json.loads((tmp_path / "infer/text.wer").read_text())
    assert summary["utterances"] == 5 and summary["wer_words"] == 10


def test_infer_script_reports_missing_inputs(tmp_path, repo_root):
    r = subprocess.run(["bash", "infer_with_shards_or_raw.sh", "--checkpoint", str(tmp_path / "nope.pt"),
                        "--data", str(tmp_path / "nope.list"), "--output", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=repo_root)
    assert r.returncode == 2 and "not found" in r.stdout


def test_decoding_keeps_samples_without_target_only_fields(tmp_path, tiny_tokenizer, repo_root):
    """Speech tokens and think_str are training targets: decoding must not need them (training does)."""
    from osum_echat.data.dataset import build_dataset, one_by_one_config

    t = np.arange(8000) / 16000
    sf.write(tmp_path / "q.wav", (0.2 * np.sin(2 * np.pi * 300 * t)).astype("float32"), 16000)
    rows = [{"key": "s2s", "wav": "q.wav", "txt": "fine thanks", "task": "<S2TCHAT> <TEXT2TOKEN>"},
            {"key": "think", "wav": "q.wav", "txt": "i hear you", "task": "<S2TCHAT> <TEXT2TOKEN> <THINK>"},
            {"key": "tts", "txt": "good morning", "task": "<TEXT2TOKEN>"},
            {"key": "t2t", "txt": "an answer", "task": "<TEXT2TEXT>"}]  # question is an input: still needed
    (tmp_path / "d.list").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = one_by_one_config(load_config(repo_root / "conf/tiny_ct_config.yaml"))

    def keys(mode):
        ds = build_dataset(cfg, "raw", str(tmp_path / "d.list"), tiny_tokenizer, root=str(tmp_path), mode=mode)
        return [b.keys[0] for b in ds], ds.skip_counts()

    assert keys("infer") == ([], {"missing_field": 4})
    kept, skipped = keys("decode")
    assert sorted(kept) == ["s2s", "think", "tts"] and skipped == {"missing_field": 1}
