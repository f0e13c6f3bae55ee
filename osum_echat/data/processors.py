"""Pipeline stages, one import for data/dataset.py. Each is a generator `stage(samples, ...)` yielding samples.

Order (built by data/dataset.py): expand_dialogue_prefix -> tokenize -> route ->
load_audio -> filter_samples -> resample_audio -> compute_features ->
spec_aug / spec_sub / spec_trim -> shuffle -> sort -> batch -> padding.

Where they live, by concern: text and label rules in data/text.py (upstream's
label tables in osum_echat/labels.py, beside the task table), dialogue expansion
and tokenization in data/tokenize.py, audio decoding, features and augmentation
in data/audio.py, length filters in data/filters.py, shuffle/sort/batch/padding
in data/batching.py.

Broken samples are skipped through `counter.skip(...)` (data/skips.py) and
never stop the stream. Randomness comes from the `rng` (random.Random) given
to a stage, seeded by the dataset from (seed, epoch, rank, worker).
"""
from ..labels import OTHER_ASSISTANT_NAMES
from .audio import LazyFeat, compute_features, load_audio, resample_audio, spec_aug, spec_sub, spec_trim
from .batching import batch, emit, padding, shuffle, sort
from .filters import MIX_CATEGORIES, filter_options, filter_samples, route
from .tokenize import expand_dialogue_prefix, tokenize

__all__ = ["OTHER_ASSISTANT_NAMES", "MIX_CATEGORIES", "expand_dialogue_prefix", "tokenize", "load_audio",
           "filter_options", "filter_samples", "route", "resample_audio", "compute_features", "spec_aug", "spec_sub", "spec_trim",
           "shuffle", "sort", "batch", "padding", "emit", "LazyFeat"]
