"""Build the data pipeline from a config.

    ds = build_dataset(config, "shard", "data/train/shards.list", tokenizer)
    loader = build_dataloader(ds, num_workers=2, prefetch=4, pin_memory=False)
    for epoch in ...:
        ds.set_epoch(epoch)
        for batch in loader: ...          # osum_echat.data.batch.Batch
    ds.skip_counts()                      # {"missing_file": 1, "bad_speech_token": 3, ...}

Work split: the list entries (raw lines, tars, combine pairs) are repeated
`multi_num` times (train mode), shuffled with a generator seeded by
(seed, epoch) when `shuffle` is on, the first `start_index` of that order are
dropped (resume: `data_recover` + `data_recover_conf.start_idx`, or
`set_epoch(epoch, start_index)`), and the rest is dealt out
`order[rank::world_size][worker::num_workers]`: every entry is read exactly
once per epoch across ranks x workers. With `split_num` > 1 an epoch reads
one of `split_num` slices of the shuffled order (upstream's sub-epochs).

Skips: every stage that drops a sample counts it by reason (data/skips.py);
`skip_counts()` sums the counts of all workers of this process. Kept samples
worth knowing about (a task tag not in the task table, trained as speech ->
text like upstream) are counted by `note_counts()`.

Config read (upstream ct_config.yaml's dataset_conf, plus a few additions):
  speech_token_num, prompt_conf_path, expand_dialogue_prefix (added:
  resample_history_like_upstream, default true, see data/tokenize.py), other_tokenze_conf
  (task conversions), filter_conf (+ other_filter_conf; added: banned_words, the
  other-assistant word list, default labels.OTHER_ASSISTANT_NAMES),
  resample_conf, feats_type (log_mel_spectrogram | fbank), log_mel_spectrogram_conf,
  fbank_conf, spec_aug/spec_sub/spec_trim (+ _conf), shuffle/shuffle_conf,
  sort/sort_conf, batch_conf, multi_num, split_num, data_recover/data_recover_conf;
  added: mix_weights (four-way mixing); eod_id (must be the tokenizer's end id);
  filter_conf.filter_no_extra_info and language_conf.limited_langs count notes (data/tokenize.py);
  filter_conf.other_filter_conf.only_* (data/filters.py). Every key is checked by config_schema.py.
  Top level: seed, think_mode (language | tag).
Determinism: every random choice comes from generators seeded by
(seed, epoch, rank, worker), so the same epoch gives the same batches in every
run and a trainer may resume by replaying batches or by `start_index`. In
eval/infer the user-prompt choice uses random.Random(seed) in data order, one
randint per prompted sample, like upstream: the same prompts as upstream's.
Skip counts are per process: under DDP sum them over ranks.

Modes: "train" applies shuffling, spec augmentation, task conversions and
multi_num; "eval" and "infer" apply none of them (same data in the same order
each time); "infer" also keeps samples the length filters would drop; "decode" is "infer" for
decoding (osum_echat/infer/batch.py, chat):
  - samples lacking target-only fields (speech tokens, think_str) are kept;
  - no content filter (banned_words, <NONE> targets) and no length filter (the decoder says
    which audio is too long for the encoder);
  - dialogues are not expanded into prefixes; read from a list, a tag not in the task table is
    skipped as unknown_task (nothing says how to decode or score it);
  - the user prompt is drawn by random.Random(f"{seed}\t{key}"): it depends only on the key and
    the seed, never on how the list is split over processes and workers (`fixed_prompt` instead
    gives every prompted sample that prompt);
  - list samples whose key is in `skip_keys` (already decoded: resume) are passed over;
  - a list with fewer entries than ranks (one big tar) is shared out sample by sample;
  - each list sample's extra carries DECODE_INFO: {"pos": [list line, index in that line's tar],
    "reference": the list's txt as written (tags kept, whatever think_mode)}.
"""
from __future__ import annotations

import copy
import random
from typing import Optional

import torch
import yaml
from torch.utils.data import DataLoader, IterableDataset

from .. import tasks as task_table
from ..config import ConfigError, resolve_path
from . import processors as P
from .data_index import DataIndex, IndexedTokenizer, start_index
from .skips import SkipCounter
from .sources import read_entries, read_entry

MODES = ("train", "eval", "infer", "decode")
DECODE_INFO = "_decode"  # key of the decode-mode info in each sample's extra (see above)


def _dataset_conf(config: dict) -> dict:
    return config.get("dataset_conf", config) if isinstance(config, dict) else {}


def load_prompts(path) -> dict:
    if not path:
        return {}
    p = resolve_path(path)
    if not p.is_file():
        raise ConfigError(f"dataset_conf.prompt_conf_path: {path} not found (task tag -> list of prompts)")
    prompts = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(prompts, dict):
        raise ConfigError(f"{path}: expected a mapping task tag -> list of prompts")
    return {str(k).strip(): [str(x) for x in (v or [])] for k, v in prompts.items()}


def one_by_one_config(config: dict) -> dict:
    """A copy of `config` that reads a list as it is: batches of one utterance, in list order, with no
    shuffling, sorting, augmentation or resume offset (compute_loss, inspect_data, inference)."""
    config = copy.deepcopy(config)
    conf = config.setdefault("dataset_conf", {})
    conf["batch_conf"] = {"batch_type": "static", "batch_size": 1}
    conf["shuffle"] = conf["sort"] = False
    for name in ("spec_aug", "spec_sub", "spec_trim", "speed_perturb", "data_recover"):
        conf[name] = False
    return config


class OsumDataset(IterableDataset):
    """One list (raw | shard | combine) through the whole pipeline, yielding Batch objects."""

    def __init__(self, config: dict, data_type: str, list_path: Optional[str], tokenizer, *, root: Optional[str] = None,
                 mode: str = "train", only=None, rank: Optional[int] = None,
                 world_size: Optional[int] = None, counter: Optional[SkipCounter] = None,
                 skip_keys=frozenset(), fixed_prompt: Optional[str] = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.conf = copy.deepcopy(_dataset_conf(config))
        self.seed = int(config.get("seed", 777)) if isinstance(config, dict) else 777
        self.think_mode = config.get("think_mode", self.conf.get("think_mode", "language"))
        if self.think_mode not in ("language", "tag"):
            raise ConfigError(f"think_mode must be 'language' or 'tag', got {self.think_mode!r}")
        self.speech_token_num = int(self.conf.get("speech_token_num", config.get("speech_token_num", 1)))
        feats_type = self.conf.get("feats_type", "log_mel_spectrogram")
        if feats_type not in ("log_mel_spectrogram", "fbank"):
            raise ConfigError(f"dataset_conf.feats_type must be log_mel_spectrogram or fbank, got {feats_type!r}")
        batch_type = (self.conf.get("batch_conf") or {}).get("batch_type", "static")
        if batch_type not in ("static", "dynamic"):
            raise ConfigError(f"dataset_conf.batch_conf.batch_type must be static or dynamic, got {batch_type!r}")
        if self.conf.get("speed_perturb", False):
            raise ConfigError("dataset_conf.speed_perturb: true is not supported; set it to false")
        self.mode, self.only, self.root = mode, only, root
        self.tokenizer = tokenizer
        eod = self.conf.get("eod_id")  # upstream sets tokenizer.eod_id from it and reads it nowhere
        if eod is not None and eod != tokenizer.eos_token_id:
            raise ConfigError(f"dataset_conf.eod_id is {eod} but the tokenizer of llm_path ends a reply with "
                              f"{tokenizer.eos_token_id}; remove eod_id (the end id comes from the tokenizer)")
        self.prompts = load_prompts(self.conf.get("prompt_conf_path"))
        try:  # no list (None): samples come from the caller through process() (infer/runtime.py)
            self.entries = read_entries(list_path, data_type, root) if list_path is not None else []
        except FileNotFoundError as e:
            raise ConfigError(f"data list: {e}") from None
        self.list_path = str(list_path)
        self.counter = counter or SkipCounter()
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.resume_skip = {}  # worker -> batches of this epoch already trained on (skip_batches)
        recover = self.conf.get("data_recover", False)
        self.start_index = int((self.conf.get("data_recover_conf") or {}).get("start_idx", 0)) if recover else 0
        self.skip_keys = frozenset(skip_keys)
        self.index = None  # data_index.DataIndex: use_data_index
        if fixed_prompt is not None:
            self.prompts = _FixedPrompt(fixed_prompt)

    # ---------------------------------------------------------------- work split
    def set_epoch(self, epoch: int, start_index: Optional[int] = None) -> None:
        self.epoch = int(epoch)
        self.resume_skip = {}
        if start_index is not None:
            self.start_index = int(start_index)

    def _rank_world(self):
        if self.rank is not None:
            return self.rank, self.world_size or 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def epoch_order(self) -> list:
        """Indices into self.entries this epoch reads, over all ranks and workers, in order."""
        train = self.mode == "train"
        multi = int(self.conf.get("multi_num", 1)) if train else 1
        split = max(1, int(self.conf.get("split_num", 1))) if train else 1
        order = list(range(len(self.entries))) * max(1, multi)
        if train and self.conf.get("shuffle", True):
            random.Random(self.seed * 1000003 + self.epoch // split).shuffle(order)
        if split > 1:
            part, size = self.epoch % split, len(order) // split
            order = order[part * size:(part + 1) * size if part + 1 < split else len(order)]
        start = self.start_index if self.start_index < len(order) else 0
        return order[start:]

    def my_entries(self) -> list:
        rank, world = self._rank_world()
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        return [self.entries[i] for i in self.epoch_order()[rank::world][worker::workers]]

    def _rng(self, stage: int) -> random.Random:
        rank, _ = self._rank_world()
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        return random.Random(hash((self.seed, self.epoch, rank, worker, stage)))

    def _tokenize_rng(self) -> random.Random:
        """Train: per (epoch, rank, worker). Eval/infer: random.Random(seed), so each
        worker draws the user prompts in data order exactly as upstream does after
        its random.seed(seed) (train.py), and picks the same prompts."""
        return self._rng(1) if self.mode == "train" else random.Random(self.seed)

    # ---------------------------------------------------------------- pipeline
    def samples(self, lazy: bool = False):
        """Sample dicts up to (and including) features and augmentation (lazy: see process)."""
        if self.mode == "decode":
            return self.process(self._decode_reads())
        entries = self.my_entries()
        return self.process((s for e in entries for s in read_entry(e, self.counter, self.root)), lazy=lazy)

    def lazy_ok(self) -> bool:
        """Whether features may be computed at padding time (audio.LazyFeat) with the same result:
        train mode, and no fbank dither (its noise comes from torch's global generator, in order)."""
        conf = self.conf
        dither = float((conf.get("fbank_conf") or {}).get("dither", 0.0) or 0.0)
        return self.mode == "train" and not (conf.get("feats_type") == "fbank" and dither > 0)

    def process(self, stream, lazy: bool = False):
        """Source sample dicts (key, txt, task, extra, history, audio: path or bytes) through every
        stage up to features and augmentation. lazy (train): resampling, features and augmentation
        of the main audio are recorded (audio.LazyFeat) and done when the batch is padded."""
        lazy = lazy and self.lazy_ok()
        conf, counter, train, decode = self.conf, self.counter, self.mode == "train", self.mode == "decode"
        expand = conf.get("expand_dialogue_prefix") or {}
        if expand.get("enable", False) and not decode:
            stream = P.expand_dialogue_prefix(
                stream, int(expand.get("max_turn", 0)), int(expand.get("min_turn", 1)),
                bool(expand.get("keep_final", True)),
                bool(expand.get("resample_history_like_upstream", True)))
        tok_conf = (conf.get("other_tokenze_conf") or {}) if train else {}
        filter_conf, other, only = P.filter_options(conf, self.only)
        banned = filter_conf.pop("banned_words", P.OTHER_ASSISTANT_NAMES)
        tok_kw = dict(prompts=self.prompts, speech_token_num=self.speech_token_num, conf=tok_conf,
                      think_mode=self.think_mode, banned_words=() if decode else banned, targets_required=not decode,
                      note_missing_task=filter_conf.pop("filter_no_extra_info", False),
                      limited_langs=None if decode else (conf.get("language_conf") or {}).get("limited_langs"))
        index = self.index if lazy else None
        if decode:
            stream = self._tokenize_per_key(stream, tok_kw)
        else:
            tokenizer = self.tokenizer if index is None else IndexedTokenizer(self.tokenizer, index)
            stream = P.tokenize(stream, tokenizer, counter, rng=self._tokenize_rng(), **tok_kw)
        stream = P.route(stream, counter, only)
        stream = P.load_audio(stream, counter, index=index)
        if self.mode in ("infer", "decode"):
            filter_conf = {"max_length": float("inf"), "min_length": 0, "token_max_length": float("inf"),
                           "token_min_length": 0, "max_seq_len": 0}
        stream = P.filter_samples(stream, counter,
                                  fiter_txt_is_None=other.get("fiter_txt_is_None", False) and not decode,
                                  check_speech_ratio=not decode, **filter_conf)
        stream = P.resample_audio(stream, **(conf.get("resample_conf") or {}), lazy=lazy)
        feats_type = conf.get("feats_type", "log_mel_spectrogram")
        feat_conf = dict(conf.get("log_mel_spectrogram_conf") or {})
        if feats_type == "fbank":
            fb = dict(conf.get("fbank_conf") or {})
            feat_conf = {"num_mel_bins": fb.get("num_mel_bins", 80), "fbank_conf": fb}
        stream = P.compute_features(stream, counter, feats_type=feats_type, **feat_conf, lazy=lazy)
        if train:
            for stage, (name, fn) in enumerate((("spec_aug", P.spec_aug), ("spec_sub", P.spec_sub),
                                                ("spec_trim", P.spec_trim)), start=2):
                if conf.get(name, False):
                    stream = fn(stream, self._rng(stage), **(conf.get(f"{name}_conf") or {}))
        return stream

    def _decode_reads(self):
        """Decode mode: list position and raw reference kept, done keys passed over, unknown tags
        failed. With fewer list entries (tars, combine pairs) than ranks, the samples are shared out
        instead: every rank reads every entry and keeps sample j of entry i when (i + j) % ranks is its own."""
        rank, world = self._rank_world()
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        order = self.epoch_order()
        by_sample = len(order) < world
        for i in (order if by_sample else order[rank::world])[worker::workers]:
            entry = self.entries[i]
            line = entry.where.rsplit(":", 1)[-1]
            line = int(line) if line.isdigit() else 0
            for j, sample in enumerate(read_entry(entry, self.counter, self.root)):
                if by_sample and (i + j) % world != rank:
                    continue
                key = str(sample.get("key"))
                if key in self.skip_keys:
                    continue
                tag = task_table.normalize_tag(sample.get("task") or task_table.DEFAULT_TASK)
                if task_table.get_task(tag) is None:
                    self.counter.skip("unknown_task", sample.get("src", entry.where), key,
                                      f"task {tag!r} is not in the task table (osum_echat/tasks.py)")
                    continue
                if entry.kind != "raw":  # messages name the user's list line, then the tar
                    sample["src"] = f"{entry.where} {sample.get('src', '')}"
                sample["_decode"] = {"pos": [line, j], "reference": str(sample.get("txt") or "")}
                yield sample

    def _tokenize_per_key(self, stream, tok_kw):
        """Decode mode: each sample tokenized with a generator seeded by (seed, key) alone."""
        for sample in stream:
            rng = random.Random(f"{self.seed}\t{sample.get('key')}")
            for out in P.tokenize(iter([sample]), self.tokenizer, self.counter, rng=rng, **tok_kw):
                info = out.pop("_decode", None)
                if info is not None:
                    out["extra"][DECODE_INFO] = info
                yield out

    def batch_lists(self):
        """This worker's batches as lists of samples, features still lazy where possible."""
        return self.batches(self.samples(lazy=True), pad=False)

    def batches(self, stream, pad: bool = True):
        conf = self.conf
        if self.mode == "train" and conf.get("shuffle", True):
            stream = P.shuffle(stream, self._rng(5), **(conf.get("shuffle_conf") or {}))
        if conf.get("sort", True) and self.mode not in ("infer", "decode"):
            stream = P.sort(stream, **(conf.get("sort_conf") or {}))
        stream = P.batch(stream, **(conf.get("batch_conf") or {}))
        return P.padding(stream) if pad else stream

    def skip_batches(self, per_worker: dict) -> bool:
        """Resume: worker w's first per_worker[w] batches of this epoch (set_epoch first) come out as
        SkippedBatch markers, read and batched but with no features computed. False (nothing set)
        where features cannot be deferred: the caller replays the batches instead."""
        if not self.lazy_ok():
            return False
        self.resume_skip = {int(w): int(n) for w, n in per_worker.items()}
        return True

    def use_data_index(self, root: Optional[str]) -> None:
        """Train mode: record per-sample facts under `root` and seek with them (data/data_index.py);
        None: off."""
        self.index = DataIndex(root, self.tokenizer) if root and self.mode == "train" else None

    def __iter__(self):
        worker = _worker_id()
        skip = self.resume_skip.get(worker, 0)
        seeked = start_index(self.index, self._rank_world()[0], worker, skip)
        return P.emit(self.batch_lists(), worker, skip, seeked=seeked)

    def skip_counts(self) -> dict:
        return self.counter.counts()

    def note_counts(self) -> dict:
        """Samples kept but noted, e.g. {"unknown_task": 2} (data/skips.py NOTES)."""
        return self.counter.notes()


class _FixedPrompt(dict):
    """A prompt table giving every task tag the same single prompt."""

    def __init__(self, prompt: str):
        super().__init__()
        self.prompt = prompt

    def __contains__(self, tag) -> bool:
        return True

    def get(self, tag, default=None):
        return [self.prompt]


def build_dataset(config: dict, data_type: str, data_lists, tokenizer, *, root: Optional[str] = None,
                  mode: str = "train", rank: Optional[int] = None, world_size: Optional[int] = None):
    """The training/eval/inference dataset: one list, or {"s2t","t2s","s2s","t2t"} lists mixed by weight."""
    if isinstance(data_lists, dict):
        from .mixing import build_mixed

        return build_mixed(config, data_type, data_lists, tokenizer, root=root, mode=mode, rank=rank,
                           world_size=world_size)
    return OsumDataset(config, data_type, data_lists, tokenizer, root=root, mode=mode, rank=rank,
                       world_size=world_size)


def _worker_id() -> int:
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else info.id


def _worker_init(_):
    torch.set_num_threads(1)


def build_dataloader(dataset, num_workers: int = 0, prefetch: int = 2, pin_memory: bool = False) -> DataLoader:
    kw = {"prefetch_factor": prefetch, "worker_init_fn": _worker_init} if num_workers > 0 else {}
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, **kw)
