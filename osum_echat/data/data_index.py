"""Data index: what a resumed run needs to know of a sample to seek past it without decoding its
audio or tokenizing its text (ESPnet's shape files, lhotse's durations; here written as a side effect
of reading, so no preparation step).

    ds.use_data_index("exp/x/data_index")     # train mode; bin/train.py: --data_index (default on)

While the pipeline decodes an audio or tokenizes a text for the first time it appends one JSON line to
DIR/v<VERSION>-<tokenizer hash>/r<rank>w<worker>.jsonl:
  {"t": <text id>, "n": token count}                 tokenizer.encode(text) had n ids
  {"a": <audio id>, "n": samples, "r": rate}         the decoded main audio (1, n) at rate
  {"a": <audio id>, "e": [reason, detail]}           audio that was skipped: bad_audio/empty_audio/nan_audio
Ids are 64-bit BLAKE2b hashes of what the fact depends on: a text's exact string (and the tokenizer:
its hash names the folder, so another tokenizer's index is never read); an audio path with its size,
mtime and start/end (a file replaced on disk gets a new id), or for audio bytes from a tar the sample
key, the byte count and their CRC-32. Nothing in the feature, filter or batching config enters a fact:
frames, filter verdicts and batches are computed from them as from the real tensors.

On the skip path (SkippedBatch markers, data/dataset.py skip_batches) a sample whose facts are known
gets a DeferredWav (its shape, decoded on demand) and a DeferredIds label (its length, encoded on
demand): filters, sort, spec-aug draws and batching run as usual on those lengths, a known-bad audio is
skipped and counted with its recorded reason, and only a sample that lands in a batch trained on is
decoded and tokenized (at padding time, with its shape checked against the index). A sample not in the
index takes the full path, so results never depend on the index: with it, without it, partial or stale,
the batches are the same. Main audio only: history turns and dialogue children with upstream's
re-labelled rate (data/tokenize.py expand_dialogue_prefix) are always decoded.

Crash safety: one line-buffered append per fact; a torn last line (killed mid-write) is ignored on
reading, and an append to a file not ending in a newline starts a new line first. Every worker reads all
files of the folder on its first use (memory: ~150 bytes a fact).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import zlib

from ..utils import get_logger
from . import features

log = get_logger("osum_echat.data")

VERSION = 1  # bump when a fact's meaning changes: older folders are then never read
AUDIO_ERRORS = ("bad_audio", "empty_audio", "nan_audio")  # verdicts of the audio content itself


def _hash(*parts) -> int:
    text = "\0".join(map(str, parts)).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def tokenizer_id(tokenizer) -> str:
    """A hash of everything that decides token counts: the serialized fast tokenizer (vocab, merges,
    normalizer, added tokens), or the vocabulary of a slow one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return f"{_hash(type(tokenizer).__name__, spec):016x}"


class DeferredIds:
    """tokenizer.encode(text) of a text the index knows: its length now, its ids when padded."""
    __slots__ = ("tokenizer", "text", "n", "tail", "ids")

    def __init__(self, tokenizer, text: str, n: int):
        self.tokenizer, self.text, self.n, self.tail, self.ids = tokenizer, text, n, [], None

    def __len__(self) -> int:
        return len(self.ids) if self.ids is not None else self.n + len(self.tail)

    def append(self, token_id: int) -> None:
        (self.ids if self.ids is not None else self.tail).append(token_id)

    def materialize(self) -> list:
        if self.ids is None:
            ids = self.tokenizer.encode(self.text, add_special_tokens=False)
            if len(ids) != self.n:
                raise RuntimeError(f"data index: {self.text[:60]!r} has {len(ids)} tokens, the index says "
                                   f"{self.n}; delete the data_index folder (made with another tokenizer?)")
            self.ids = ids + self.tail
        return self.ids

    def __iter__(self):
        return iter(self.materialize())


class DeferredWav:
    """A main audio the index knows: shape (1, n) now, the waveform when its features are computed."""
    __slots__ = ("audio", "start", "end", "n", "rate")

    def __init__(self, audio, start, end, n: int, rate: int):
        self.audio, self.start, self.end, self.n, self.rate = audio, start, end, n, rate

    def size(self, dim=None):
        shape = (1, self.n)
        return shape if dim is None else shape[dim]

    def load(self):
        wav, rate = features.decode_audio(self.audio, self.start, self.end)
        if wav.shape != (1, self.n) or rate != self.rate:
            where = self.audio if isinstance(self.audio, str) else "audio bytes"
            raise RuntimeError(f"data index: {where} decodes to {tuple(wav.shape)} at {rate} Hz, the index says "
                               f"(1, {self.n}) at {self.rate} Hz; delete the data_index folder")
        return wav


class DataIndex:
    """The facts of one index folder, read once per process, appended to as samples are read."""

    def __init__(self, root: str, tokenizer):
        self.dir = os.path.join(str(root), f"v{VERSION}-{tokenizer_id(tokenizer)}")
        self.tokenizer = tokenizer
        self.seeking = False  # on while this process's stream passes over batches already trained on
        self.where = (0, 0)  # (rank, worker) of the file this process appends to
        self.hits = self.misses = 0  # samples of the current seek read from the index / decoded
        self._texts = self._audio = None
        self._file = self._file_pid = None

    def __getstate__(self):  # to DataLoader workers: no facts, no open file (each reads its own)
        state = dict(self.__dict__)
        state.update(_texts=None, _audio=None, _file=None, _file_pid=None)
        return state

    # ------------------------------------------------------------------ seeking
    def start(self, rank: int, worker: int, seeking: bool) -> None:
        """Called where a stream starts (a worker's __iter__): loads the facts, arms the skip path."""
        self.where, self.seeking, self.hits, self.misses = (rank, worker), seeking, 0, 0
        self._load()

    def stop_seeking(self) -> None:
        if self.seeking:
            log.info("data index: the seek took the facts of %d audios from %s and decoded %d", self.hits,
                     self.dir, self.misses)
        self.seeking = False

    # ------------------------------------------------------------------ text
    def encode(self, text: str, add_special_tokens: bool = False):
        """tokenizer.encode through the index: DeferredIds while seeking and known, else real ids."""
        self._load()
        tid = _hash("t", int(add_special_tokens), text)
        n = self._texts.get(tid)
        if n is not None and self.seeking and not add_special_tokens:
            return DeferredIds(self.tokenizer, text, n)
        ids = self.tokenizer.encode(text, add_special_tokens=add_special_tokens)
        if n is None:
            self._texts[tid] = len(ids)
            self._write({"t": f"{tid:016x}", "n": len(ids)})
        return ids

    # ------------------------------------------------------------------ audio
    def audio_id(self, audio, start, end, key):
        """The id of a main audio (path or bytes), None where the file cannot be stat'ed."""
        if isinstance(audio, str):
            try:
                st = os.stat(audio)
            except OSError:
                return None  # the full path says missing_file
            return _hash("p", audio, st.st_size, st.st_mtime_ns, start, end)
        if isinstance(audio, (bytes, bytearray)):
            return _hash("b", key, len(audio), zlib.crc32(audio), start, end)
        return None

    def known_audio(self, audio, start, end, aid):
        """While seeking: a DeferredWav, or (reason, detail) of a known-bad audio; else None (decode it)."""
        self._load()
        facts = self._audio.get(aid) if aid is not None and self.seeking else None
        if facts is None:
            self.misses += self.seeking and aid is not None  # (None: a missing file, not decoded)
            return None
        self.hits += 1
        return facts if isinstance(facts[0], str) else DeferredWav(audio, start, end, facts[0], facts[1])

    def add_audio(self, aid, wav, rate, err) -> None:
        """Record a decode's outcome (errors of the content only, see AUDIO_ERRORS)."""
        self._load()
        if aid is None or aid in self._audio or (err and err[0] not in AUDIO_ERRORS):
            return
        if err:
            self._audio[aid] = (err[0], err[1])
            self._write({"a": f"{aid:016x}", "e": list(err)})
        else:
            self._audio[aid] = (wav.size(1), int(rate))
            self._write({"a": f"{aid:016x}", "n": wav.size(1), "r": int(rate)})

    # ------------------------------------------------------------------ files
    def _load(self) -> None:
        if self._texts is not None:
            return
        self._texts, self._audio = {}, {}
        for path in sorted(glob.glob(os.path.join(self.dir, "*.jsonl"))):
            with open(path, "rb") as f:
                for line in f:
                    self._read_line(line)

    def _read_line(self, line: bytes) -> None:
        try:
            rec = json.loads(line)
            if "t" in rec:
                self._texts[int(rec["t"], 16)] = int(rec["n"])
            elif "e" in rec:
                reason, detail = rec["e"]
                if reason in AUDIO_ERRORS:
                    self._audio[int(rec["a"], 16)] = (str(reason), str(detail))
            else:
                self._audio[int(rec["a"], 16)] = (int(rec["n"]), int(rec["r"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # a torn line (killed mid-write) or not ours: that sample takes the full path

    def _write(self, rec: dict) -> None:
        if self._file is None or self._file_pid != os.getpid():
            os.makedirs(self.dir, exist_ok=True)
            path = os.path.join(self.dir, "r{}w{}.jsonl".format(*self.where))
            torn = False
            if os.path.exists(path) and os.path.getsize(path) > 0:
                with open(path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    torn = f.read(1) != b"\n"
            self._file = open(path, "a", encoding="utf-8", buffering=1)
            self._file_pid = os.getpid()
            if torn:
                self._file.write("\n")
        self._file.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")


def start_index(index, rank: int, worker: int, skip: int):
    """Start a stream on `index` (or None): the callback that ends its skip path, or None."""
    if index is None:
        return None
    index.start(rank, worker, seeking=skip > 0)
    return index.stop_seeking


class IndexedTokenizer:
    """What data/tokenize.py calls as its tokenizer: encode() through the index."""

    def __init__(self, tokenizer, index: DataIndex):
        self.tokenizer, self.index = tokenizer, index
        self.eos_token_id = tokenizer.eos_token_id

    def encode(self, text: str, add_special_tokens: bool = False):
        return self.index.encode(text, add_special_tokens)
