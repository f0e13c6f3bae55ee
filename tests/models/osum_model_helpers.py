"""Tiny model and hand-made batches for the model tests."""
from __future__ import annotations

import copy

import torch

from osum_echat.models import build_model


def tiny_model(config: dict, seed: int = 0, **overrides):
    config = copy.deepcopy(config)
    config.update(overrides)
    torch.manual_seed(seed)
    model = build_model(config)
    # spread the weights so that losses and gradients differ visibly
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def pad(rows, value):
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out


def make_batch(tok, output_type, texts, feat_lens, n_speech, prompts=None, history=None, seed=0):
    """A batch dict in the Batch layout (items in the given order)."""
    g = torch.Generator().manual_seed(seed)
    speech_num = 257  # conf/tiny_ct_config.yaml speech_token_num
    labels = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    codes = [[speech_num - 1] + torch.randint(0, speech_num - 1, (n,), generator=g).tolist() + [speech_num - 1]
             for n in n_speech]
    prompts = prompts or ["transcribe the audio"] * len(texts)
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    feats = torch.zeros(len(texts), max(feat_lens), 80)
    for i, n in enumerate(feat_lens):
        feats[i, :n] = torch.randn(n, 80, generator=g)
    return dict(
        keys=[f"utt{i}" for i in range(len(texts))], feats=feats,
        feats_lengths=torch.tensor(feat_lens, dtype=torch.int32),
        target=pad(labels, -100), target_lengths=torch.tensor([len(x) for x in labels], dtype=torch.int32),
        speech_tokens=pad(codes, -100), speech_tokens_length=torch.tensor([len(c) for c in codes], dtype=torch.int32),
        prompt=pad(prompt_ids, -1), prompt_lengths=torch.tensor([len(p) for p in prompt_ids], dtype=torch.int32),
        history=history if history is not None else [[] for _ in texts],
        output_type=output_type, task=["<x>"] * len(texts), txts=list(texts))


def select(batch: dict, index: int) -> dict:
    """Item `index` alone, unpadded, as a batch of one."""
    one = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            one[k] = v[index:index + 1]
        elif isinstance(v, list):
            one[k] = v[index:index + 1]
        else:
            one[k] = v
    for field, length in (("feats", "feats_lengths"), ("target", "target_lengths"),
                          ("speech_tokens", "speech_tokens_length"), ("prompt", "prompt_lengths")):
        one[field] = one[field][:, : int(one[length][0])]
    return one
