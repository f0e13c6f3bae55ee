"""Data index: what a resumed run needs to know of a sample to seek past it without decoding its
audio or tokenizing its text (ESPnet's shape files, lhotse's durations; here written as a side effect
of reading, so no preparation step).

    ds.use_data_index("exp/x/data_index")     # train mode; bin/train.py: --data_index (default on)

While the pipeline decodes an audio or tokenizes a text for the first time it appends one line to
DIR/v<VERSION>-<tokenizer hash>/r<rank>w<worker>.txt (ids in hex, every line ends with ";"):
  t ID N;                     tokenizer.encode(text) had N ids
  a ID N RATE;                the decoded main audio, (1, N) at RATE Hz
  e ID REASON "DETAIL";       audio that was skipped: bad_audio/empty_audio/nan_audio (detail as JSON)
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

Crash safety: one line-buffered append per fact; a torn last line (killed mid-write: no ";") is ignored
on reading, and an append to a file not ending in a newline starts a new line first. Every worker reads all
files of the folder on its first use: two facts a sample, ~110 bytes of memory and ~4 us to read each
(1M facts: 110 MB, 3.7 s, measured on the 2-core development machine).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import time
import zlib

from ..utils import get_logger
from . import features

log = get_logger("osum_echat.data")

VERSION = 1  # bump when a fact's meaning changes: older folders are then never read
AUDIO_ERRORS = ("bad_audio", "empty_audio", "nan_audio")  # verdicts of the audio content itself
_RATE_BITS, _RATE_MASK = 20, (1 << 20) - 1  # a known audio in memory: one int, samples << 20 | rate


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
            self._write(f"t {tid:x} {len(ids)}")
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
        return facts if isinstance(facts, tuple) else DeferredWav(audio, start, end, facts >> _RATE_BITS,
                                                                  facts & _RATE_MASK)

    def add_audio(self, aid, wav, rate, err) -> None:
        """Record a decode's outcome (errors of the content only, see AUDIO_ERRORS)."""
        self._load()
        if aid is None or aid in self._audio or (err and err[0] not in AUDIO_ERRORS):
            return
        if err:
            self._audio[aid] = (err[0], str(err[1]))
            self._write(f"e {aid:x} {err[0]} {json.dumps(str(err[1]), ensure_ascii=False)}")
        elif 0 < int(rate) <= _RATE_MASK:
            self._audio[aid] = wav.size(1) << _RATE_BITS | int(rate)
            self._write(f"a {aid:x} {wav.size(1)} {int(rate)}")

    # ------------------------------------------------------------------ files
    def _load(self) -> None:
        if self._texts is not None:
            return
        t0, self._texts, self._audio = time.monotonic(), {}, {}
        for path in sorted(glob.glob(os.path.join(self.dir, "*.txt"))):
            with open(path, "rb") as f:
                for line in f:
                    self._read_line(line)
        if self.seeking:
            log.info("data index: read %d text and %d audio facts in %.1fs", len(self._texts), len(self._audio),
                     time.monotonic() - t0)

    def _read_line(self, line: bytes) -> None:
        line = line.rstrip(b"\r\n")
        if not line.endswith(b";"):
            return  # a torn line (killed mid-write): that sample takes the full path
        try:
            kind, fid, rest = line[:-1].split(b" ", 2)
            if kind == b"t":
                self._texts[int(fid, 16)] = int(rest)
            elif kind == b"a":
                n, rate = map(int, rest.split(b" "))
                if 0 < rate <= _RATE_MASK:
                    self._audio[int(fid, 16)] = n << _RATE_BITS | rate
            elif kind == b"e":
                reason, detail = rest.decode("utf-8").split(" ", 1)
                if reason in AUDIO_ERRORS:
                    self._audio[int(fid, 16)] = (reason, str(json.loads(detail)))
        except (ValueError, UnicodeDecodeError):
            pass  # not a line this version wrote

    def _write(self, line: str) -> None:
        if self._file is None or self._file_pid != os.getpid():
            os.makedirs(self.dir, exist_ok=True)
            path = os.path.join(self.dir, "r{}w{}.txt".format(*self.where))
            torn = False
            if os.path.exists(path) and os.path.getsize(path) > 0:
                with open(path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    torn = f.read(1) != b"\n"
            self._file = open(path, "a", encoding="utf-8", buffering=1)
            self._file_pid = os.getpid()
            if torn:
                self._file.write("\n")
        self._file.write(line + ";\n")


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
