"""Batch inference over a data list (raw | shard | combine): nothing lost, resumable, ordered.

One process decodes its share of the list (`rank` of `world_size`: every world_size-th list
entry) into OUT.split<world_size>/part.<rank>{,.jsonl,.failed}, appending as it goes; `merge`
joins the parts and any earlier merged result into, in list order:
  OUT         key<TAB>text (upstream's scp shape)
  OUT.jsonl   key, task, output_type, text, think, speech_tokens, reference (the list's txt as
              written), wav + wav_seconds (when rendered), hit_max_text_tokens,
              hit_max_speech_tokens, pos ([list line, index inside that line's tar]: the order)
  OUT.failed  key<TAB>reason for every listed utterance that did not decode (unreadable or missing
              audio, too long, unknown task, decode error ...); an unreadable list line or tar
              whose keys cannot be known is named by "list:line" or the tar path instead
  OUT.report.json / OUT.report.txt   eval/report.py
Every listed utterance ends in exactly one of OUT and OUT.failed. Rerunning the same command
decodes only what is in neither OUT.jsonl nor the process's part (failed ones are retried), so a
finished result comes out byte-identical.
"""
from __future__ import annotations

import json
import os
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from osum_echat.data.dataset import DECODE_INFO, OsumDataset, build_dataloader, one_by_one_config
from osum_echat.infer.audio_io import write_wav
from osum_echat.utils import get_logger

from .results import FailureLog, Part, one_line, rewrite_results, merge, read_records

log = get_logger("osum_echat.infer")


# ------------------------------------------------------------------ one process

class _Writer:
    """Appends one process's results; warns once when a length cap is hit."""

    def __init__(self, part: Part, failures: FailureLog, token2wav, wav_dir: str, speaker=None,
                 wav_subtype: str = "PCM_16"):
        self.part, self.failures, self.t2w, self.wav_dir, self.speaker = part, failures, token2wav, wav_dir, speaker
        self.wav_subtype = wav_subtype
        self.decoded, self.failed, self.hits = 0, 0, Counter()
        self.seen = set()

    def fail(self, key: str, reason: str, where: str, detail: str = "") -> None:
        self.failures.skip(reason, where, key, detail)
        self.failed += 1

    def add(self, hyp, task: str, info: dict, where: str) -> None:
        if hyp.key in self.seen:
            return self.fail(hyp.key, "duplicate_key", where, "the key was decoded earlier in this list")
        self.seen.add(hyp.key)
        error = getattr(hyp, "error", None)
        if error:
            reason, _, detail = str(error).partition(":")
            return self.fail(hyp.key, reason.strip() or "decode_error", where, detail.strip())
        record = {"key": hyp.key, "task": task, "output_type": hyp.output_type, "text": hyp.text,
                  "think": hyp.think, "speech_tokens": list(hyp.speech_tokens),
                  "reference": info["reference"], "wav": None, "wav_seconds": None}
        for cap in ("hit_max_text_tokens", "hit_max_speech_tokens"):
            record[cap] = bool(getattr(hyp, cap, False))
            if record[cap]:
                if not self.hits[cap]:
                    log.warning(f"{hyp.key} ({where}) stopped at the {cap[4:]} cap; the output is cut. Raise "
                                f"--{cap[4:]} or check the model; further hits are counted in the report")
                self.hits[cap] += 1
        if self.t2w is not None and record["speech_tokens"]:
            try:
                record["wav"], record["wav_seconds"] = self._render(hyp.key, record["speech_tokens"])
            except Exception as e:  # one utterance's rendering failing never stops the run
                return self.fail(hyp.key, "render_error", where, f"{type(e).__name__}: {e}")
        record["pos"] = info["pos"]
        with open(self.part.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        with open(self.part.scp, "a", encoding="utf-8") as f:
            f.write(f"{hyp.key}\t{one_line(hyp.text)}\n")
        self.decoded += 1

    def _render(self, key: str, tokens: list):
        # the flow's noise is seeded by the key: the same audio whatever the split or rerun
        generator = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
        wav = self.t2w.synthesize(tokens, prompt=self.speaker, generator=generator).detach().float().cpu().numpy()
        path = os.path.join(self.wav_dir, key.replace(os.sep, "_") + ".wav")
        write_wav(path, wav, self.t2w.sample_rate, self.wav_subtype)
        return path, round(len(wav) / self.t2w.sample_rate, 4)


def _decode_batch(decoder, batch) -> list:
    """Hypotheses of a batch; when the batch as a whole raises (out of memory ...) each item is
    decoded alone, and an item that still raises becomes a hypothesis carrying the error."""
    from osum_echat.generation.decode import select_item

    try:
        return list(decoder.decode(batch))
    except Exception as e:  # noqa: BLE001 - any failure is one utterance's, never the run's
        _free_memory()
        if len(batch.keys) > 1:
            return [h for i in range(len(batch.keys)) for h in _decode_batch(decoder, select_item(batch, i))]
        return [_ErrorHyp(batch.keys[0], batch.output_type, f"decode_error: {type(e).__name__}: {e}")]


@dataclass
class _ErrorHyp:
    key: str
    output_type: str
    error: str


def _free_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _progress(total, show: bool):
    """This process's line (done/total, utt/s, ETA); `show` False where a watcher shows all processes."""
    from osum_echat.progress import Progress

    return Progress(total, desc="decode", unit="utt", echo=show)


def decode_part(model, tokenizer, config: dict, data_type: str, data_list: str, output: str, *,
                decoder, root=None, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                token2wav=None, speaker=None, fixed_prompt=None, wav_subtype="PCM_16",
                show_progress: bool = True) -> dict:
    """Decode this process's share of the list into its part files; returns its counts."""
    part = Part.of(output, rank, world_size)
    os.makedirs(os.path.dirname(part.jsonl), exist_ok=True)
    mine = read_records(part.jsonl)
    rewrite_results(part.scp, mine)  # drops a line cut by a killed run
    done = {r["key"] for r in mine} | {r["key"] for r in read_records(output + ".jsonl")}
    failures = FailureLog(part.failed)
    conf = one_by_one_config(config)
    conf["dataset_conf"]["batch_conf"]["batch_size"] = int(getattr(decoder, "batch_size", 1))
    dataset = OsumDataset(conf, data_type, data_list, tokenizer, root=root, mode="decode", rank=rank,
                          world_size=world_size, counter=failures, skip_keys=done, fixed_prompt=fixed_prompt)
    wav_dir = output + "_wavs"
    if token2wav is not None:
        os.makedirs(wav_dir, exist_ok=True)
    writer = _Writer(part, failures, token2wav, wav_dir, speaker, wav_subtype)
    start = time.time()
    total = len(dataset.my_entries()) - len(done) if data_type == "raw" and world_size == 1 else None
    with _progress(total, show_progress) as bar, torch.no_grad():
        for batch in build_dataloader(dataset, num_workers=num_workers):
            infos = [extra[DECODE_INFO] for extra in batch.extra]
            hyps = _decode_batch(decoder, batch.to(model.device))
            for hyp, task, info in zip(hyps, batch.task, infos, strict=True):
                writer.add(hyp, task, info, f"{data_list}:{info['pos'][0]}")
            bar.set(writer.decoded + failures.total(), failures.total())
    skipped = failures.total() - writer.failed
    seconds = time.time() - start
    n = writer.decoded + failures.total()
    log.info(f"process {rank}/{world_size}: decoded {writer.decoded}, failed {failures.total()} "
             f"({skipped} while reading), {len(mine)} already done, {n / max(seconds, 1e-9):.2f} utt/s, "
             f"{seconds:.1f} s")
    return {"decoded": writer.decoded, "failed": failures.total(), "seconds": seconds, **writer.hits}


def run(model, tokenizer, config: dict, data_type: str, data_list: str, output: str, *, decoder=None,
        decode_options: dict | None = None, root=None, num_workers: int = 0, token2wav=None,
        fixed_prompt=None) -> dict:
    """Decode a whole list in this process, merge, write and return the report. `decoder` (or
    `decode_options`, the keyword arguments of generation.decode.Decoder) says how."""
    if decoder is None:
        from osum_echat.generation.decode import Decoder

        decoder = Decoder(model, **(decode_options or {}))
    model.eval()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    decode_part(model, tokenizer, config, data_type, data_list, output, decoder=decoder, root=root,
                num_workers=num_workers, token2wav=token2wav, fixed_prompt=fixed_prompt)
    return merge(output, 1)
