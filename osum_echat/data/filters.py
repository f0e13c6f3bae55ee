"""Sample filters: upstream's length limits and sequence-length estimate."""
from __future__ import annotations

from .. import labels
from .. import tasks as task_table
from ..config import ConfigError

MIX_CATEGORIES = task_table.MIX_CATEGORIES
INSTRUCT_OVERHEAD = 29 * 2  # upstream's allowance for the chat-template tokens


def _frames(wav, rate):
    return 0.0 if wav is None else wav.size(1) / rate * 100


def history_length(sample) -> float:
    """Upstream's history length: frames (10 ms) plus text characters, over all turns."""
    return sum(_frames(t["wav"], t["sample_rate"]) + len(t.get("txt", "")) for t in sample.get("history") or [])


def seq_length(sample, num_frames: float, history_len: float) -> float:
    """Upstream's estimate of the LLM sequence length of one sample."""
    spec = sample["spec"]
    n = len(sample["prompt"]) + len(sample["label"])
    if spec.speech_input:
        n += num_frames / 8
    if spec.speech_output:
        n += len(sample["speech_token"])
    return n + INSTRUCT_OVERHEAD + history_len


def filter_samples(samples, counter, *, max_length=10240, min_length=10, token_max_length=200,
                   token_min_length=1, max_seq_len=1000, fiter_txt_is_None=False,
                   check_speech_ratio=True):
    """Upstream's length limits. Frame limits apply to speech-input tasks only
    (upstream pads text-only samples with 10 s of noise instead). upstream's other_filter_conf.only_*
    check is `route`, run before the audio is decoded."""
    for sample in samples:
        key, src, spec = sample.get("key"), sample.get("src", "?"), sample["spec"]
        if check_speech_ratio and spec.speech_output and len(sample["label"]) * 0.8 >= len(sample["speech_token"]):
            counter.skip("label_speech_ratio", src, key,
                         f"{len(sample['label'])} text tokens for {len(sample['speech_token'])} speech tokens")
            continue
        need = task_table.STREAM_MIN_SPEECH_PER_TEXT * len(sample["label"])
        if check_speech_ratio and spec.streaming and len(sample["speech_token"]) < need:
            counter.skip("label_speech_ratio", src, key, f"streaming needs {need} speech tokens for "
                         f"{len(sample['label'])} text tokens, has {len(sample['speech_token'])}")
            continue
        if fiter_txt_is_None and any(t in sample["txt"] for t in labels.NONE_TARGETS):
            counter.skip("no_target", src, key, "target text is <NONE>")
            continue
        history_len = history_length(sample)
        num_frames = _frames(sample["wav"], sample["sample_rate"]) + history_len
        if spec.speech_input and num_frames < min_length:
            counter.skip("too_short", src, key, f"{num_frames:.0f} frames < min_length {min_length}")
            continue
        if spec.speech_input and num_frames > max_length:
            counter.skip("too_long", src, key, f"{num_frames:.0f} frames > max_length {max_length}")
            continue
        if len(sample["label"]) < token_min_length:
            counter.skip("label_too_short", src, key, f"{len(sample['label'])} tokens < {token_min_length}")
            continue
        if len(sample["label"]) > token_max_length:
            counter.skip("label_too_long", src, key, f"{len(sample['label'])} tokens > {token_max_length}")
            continue
        seq = seq_length(sample, num_frames, history_len)
        if 0 < max_seq_len < seq:
            counter.skip("seq_too_long", src, key, f"estimated sequence {seq:.0f} > max_seq_len {max_seq_len}")
            continue
        yield sample


def filter_options(conf: dict, serves=None):
    """(filter_conf without its nested options, other_filter_conf, mix categories to keep) from dataset_conf.

    other_filter_conf is read from filter_conf (where upstream's filter reads it) and, as before, from
    dataset_conf (where upstream's ct_config.yaml puts fiter_txt_is_None). `serves`: the categories
    a four-way mixing part is for (None: all); an other_filter_conf.only_<category> that is on narrows
    them further, as upstream applies every filter that is on (nothing may be left: all skipped)."""
    filter_conf = dict(conf.get("filter_conf") or {})
    other = dict(filter_conf.pop("other_filter_conf", None) or {})
    other.update(conf.get("other_filter_conf") or {})
    wanted = [c for c in MIX_CATEGORIES if other.get(f"only_{c}", False)]
    if len(wanted) > 1:
        raise ConfigError(f"dataset_conf.filter_conf.other_filter_conf: only_{' and only_'.join(wanted)} are all on; "
                          f"a sample belongs to one category, so nothing would be kept (upstream drops everything "
                          f"too); turn on at most one")
    serves = MIX_CATEGORIES if not serves else [serves] if isinstance(serves, str) else list(serves)
    return filter_conf, other, tuple(c for c in MIX_CATEGORIES if c in serves and (not wanted or c in wanted))


def route(samples, counter, categories=MIX_CATEGORIES):
    """Keep the samples of the given mix categories (s2t, t2s, s2s, t2t), right after tokenization, so
    a sample of another direction is dropped before its audio is decoded. Several categories: a list
    shared by directions of four-way mixing, read once (data/mixing.py)."""
    keep = set(categories)
    for sample in samples:
        spec = sample["spec"]
        if spec.mix_category not in keep:
            counter.skip("mix_category", sample.get("src", "?"), sample.get("key"),
                         f"{spec.output_type} is not a {' or '.join(categories) or 'kept'} task")
            continue
        yield sample
