"""Shuffle, sort, batch (static or dynamic budget) and padding into Batch objects."""
from __future__ import annotations

from .audio import materialize
from .batch import Batch, SkippedBatch
from .filters import history_length, seq_length

def shuffle(samples, rng, shuffle_size=10000):
    buf = []
    for sample in samples:
        buf.append(sample)
        if len(buf) >= shuffle_size:
            rng.shuffle(buf)
            yield from buf
            buf = []
    rng.shuffle(buf)
    yield from buf


def sort(samples, sort_size=500):
    buf = []
    for sample in samples:
        buf.append(sample)
        if len(buf) >= sort_size:
            buf.sort(key=lambda s: s["feat"].size(0))
            yield from buf
            buf = []
    buf.sort(key=lambda s: s["feat"].size(0))
    yield from buf


def _group(sample):
    """Samples batch together only with the same output_type and prompt presence."""
    return sample["output_type"], len(sample["prompt"]) > 0


def static_batch(samples, batch_size=16):
    buffers = {}
    for sample in samples:
        buf = buffers.setdefault(_group(sample), [])
        buf.append(sample)
        if len(buf) >= batch_size:
            yield buf
            buffers[_group(sample)] = []
    yield from (buf for buf in buffers.values() if buf)  # unlike upstream, partial batches are kept


# upstream shrinks the sequence budget for the speech-output types

def dynamic_batch(samples, max_frames_in_batch=12000, max_seq_in_batch=10000000):
    """Batch until longest x count would pass the frame or sequence budget (upstream's rule)."""
    state = {}  # group -> [buf, longest_frames, longest_seq]
    for sample in samples:
        history_len = history_length(sample)
        frames = sample["feat"].size(0) + history_len
        seq = seq_length(sample, sample["feat"].size(0), history_len)
        group = _group(sample)
        budget = max_seq_in_batch * sample["spec"].seq_budget_factor
        buf, longest_frames, longest_seq = state.get(group, ([], 0, 0))
        longest_frames, longest_seq = max(longest_frames, frames), max(longest_seq, seq)
        n = len(buf) + 1
        if buf and (longest_frames * n > max_frames_in_batch or longest_seq * n > budget):
            yield buf
            state[group] = ([sample], frames, seq)
        else:
            buf.append(sample)
            state[group] = (buf, longest_frames, longest_seq)
    yield from (buf for buf, _, _ in state.values() if buf)


def batch(samples, batch_type="static", batch_size=16, max_frames_in_batch=12000, max_seq_in_batch=10000000,
          **unused):
    if batch_type == "static":
        return static_batch(samples, batch_size)
    if batch_type == "dynamic":
        return dynamic_batch(samples, max_frames_in_batch, max_seq_in_batch)
    raise ValueError(f"dataset_conf.batch_conf.batch_type must be static or dynamic, got {batch_type!r}")


def padding(batches):
    for items in batches:
        yield Batch.from_samples(items)


def emit(batches, worker: int = 0, skip: int = 0, seeked=None):
    """Batches (lists of samples, lazy features computed here), padded; the first `skip` pass as
    SkippedBatch markers without features being computed (a resumed run already trained on them).
    seeked(): called once the last of them is formed (the data index's skip path ends there)."""
    for i, items in enumerate(batches):
        if i < skip:
            if i + 1 == skip and seeked is not None:
                seeked()
            yield SkippedBatch(worker, len(items))
        else:
            out = Batch.from_samples(materialize(items))
            out.worker = worker
            yield out
