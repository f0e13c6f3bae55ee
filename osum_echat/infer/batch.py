"""Batch inference over a data list (raw | shard | combine): one hypothesis per utterance.

Writes `OUT` as `key<TAB>text` lines (the scp format upstream's scoring scripts read) and
`OUT.jsonl` with everything decoded per utterance (task, output_type, text, think, speech tokens).
When the list carries reference texts, `OUT.wer` holds the WER/CER and tag accuracy.
"""
from __future__ import annotations

import json
from pathlib import Path


from osum_echat.data.dataset import build_dataloader, build_dataset, one_by_one_config
from osum_echat.eval.report import score
from osum_echat.generation.decode import Decoder, split_think
from osum_echat.utils import get_logger

log = get_logger("osum_echat.infer")


def run(model, tokenizer, config: dict, data_type: str, data_list: str, output: str, *, root=None,
        decode_options: dict | None = None, num_workers: int = 0) -> dict:
    dataset = build_dataset(one_by_one_config(config), data_type, data_list, tokenizer, root=root, mode="decode")
    decoder = Decoder(model, **(decode_options or {}))
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    records, n = [], 0
    model.eval()
    with open(out, "w", encoding="utf-8") as scp, open(f"{out}.jsonl", "w", encoding="utf-8") as full:
        for batch in build_dataloader(dataset, num_workers=num_workers):
            batch = batch.to(model.device)
            for hyp, task, ref in zip(decoder.decode(batch), batch.task, batch.txts):
                scp.write(f"{hyp.key}\t{hyp.text}\n")
                record = {"key": hyp.key, "task": task, "output_type": hyp.output_type, "text": hyp.text,
                          "think": hyp.think, "speech_tokens": hyp.speech_tokens, "ref": split_think(ref)[1]}
                full.write(json.dumps(record, ensure_ascii=False) + "\n")
                records.append(record)
                n += 1
            scp.flush()
            full.flush()
    summary = {**score(records), "skipped": dataset.skip_counts()}
    Path(f"{out}.wer").write_text(json.dumps(summary, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("decoded %d utterances -> %s (%s)", n, out, summary)
    return summary


