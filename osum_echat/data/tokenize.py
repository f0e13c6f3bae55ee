"""Dialogue expansion and tokenization: txt/task/extra -> label ids, prompt ids, speech tokens by the task table."""
from __future__ import annotations

import json
import re

from .. import labels
from .. import tasks as task_table
from ..utils import get_logger
from .text import answer_part, first_tag, normalize_text, patch_text, target_text

log = get_logger("osum_echat.data")


def expand_dialogue_prefix(samples, max_turn: int = 0, min_turn: int = 1, keep_final: bool = True,
                           resample_history_like_upstream: bool = True):
    """One sample per dialogue prefix: turn k trains on turn k with turns < k as history.

    Turn k's speech tokens come from extra["speech_token_k"], the last turn's
    from extra["speech_token"]. Unlike upstream (where keep_final does nothing)
    keep_final=False leaves out the full dialogue.

    upstream quirk (resample_history_like_upstream): the sample made from
    history turn k gets that turn's audio already resampled to 16 kHz but keeps
    the sample rate of the dialogue's main audio, so when the main audio is not
    16 kHz the turn is resampled a second time (24 kHz main audio: the turn comes
    out 2/3 as long). load_audio does this for samples marked here with
    "upstream_rate_of"; False gives correctly timed turn audio.
    """
    for sample in samples:
        history = sample.get("history") or []
        if not history:
            yield sample
            continue
        total = len(history) + 1
        last = total if max_turn <= 0 else min(total, max_turn)
        for turn in range(max(1, min_turn), last + 1):
            if turn == total and not keep_final:
                continue
            child = dict(sample)
            extra = dict(_extra_dict(sample))  # a JSON-string extra (allowed in raw lists) is read too
            if turn < total:
                current = history[turn - 1]
                child["audio"], child["txt"] = current.get("audio"), current.get("txt", "")
                child.pop("start", None), child.pop("end", None)
                if resample_history_like_upstream:
                    child["upstream_rate_of"] = sample.get("audio")
                # the last turn's tokens are not this turn's: without speech_token_k the
                # child has none, and a speech-output task skips it as missing_field
                extra.pop("speech_token", None)
                child.pop("speech_token", None)
                if f"speech_token_{turn}" in extra:
                    extra["speech_token"] = extra[f"speech_token_{turn}"]
            child["history"] = [dict(t) for t in history[:turn - 1]]
            child["extra"] = extra
            child["key"] = f"{sample['key']}#turn{turn}" if turn < total else sample["key"]
            yield child


def _extra_dict(sample) -> dict:
    extra = sample.get("extra")
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            extra = None  # upstream: an unreadable extra string counts as empty
    return extra if isinstance(extra, dict) else {}


def wrap_speech_tokens(tokens, speech_token_num: int):
    """Validated speech tokens wrapped with the speech bos/eos code (speech_token_num - 1).

    Returns (wrapped, None) or (None, reason-detail)."""
    if not isinstance(tokens, (list, tuple)) or len(tokens) == 0:
        return None, "speech_token must be a non-empty list of integers"
    out = []
    limit = speech_token_num - 1
    for t in tokens:
        if isinstance(t, bool) or not isinstance(t, (int, str)) and not (isinstance(t, float) and t.is_integer()):
            return None, f"speech token {t!r} is not an integer"
        try:
            v = int(t)
        except ValueError:
            return None, f"speech token {t!r} is not an integer"
        if not 0 <= v < limit:
            return None, f"speech token {v} outside [0, {limit}) (speech_token_num={speech_token_num})"
        out.append(v)
    return [limit] + out + [limit], None


# upstream's random conversions: (other_tokenze_conf key, TaskSpec column naming the target tag,
# whether a sample of that row may convert)
_CONVERSIONS = (
    ("use_streaming_tts", "streaming_tag", lambda spec, extra, think_mode: not spec.speech_input),
    ("use_s2s_streaming_random", "streaming_tag", lambda spec, extra, think_mode: spec.speech_input),
    ("use_think_mode", "think_tag", lambda spec, extra, think_mode: _has_think_source(extra, think_mode)),
)


def _convert(spec, txt, extra, conf, rng, think_mode="language"):
    """Upstream's optional random task conversions (all off unless enabled in other_tokenze_conf)."""
    if conf.get("use_50_per_change_if_only_X", False) and spec.only_x and rng.random() < 0.5:
        cut = first_tag(txt) if spec.only_x_take == "first_tag" else answer_part(txt)
        return task_table.TASKS[spec.only_x], cut
    for key, column, applies in _CONVERSIONS:
        opt = conf.get(key) or {}
        target = getattr(spec, column)
        if opt.get("enable", False) and target is not None and applies(spec, extra, think_mode) \
                and rng.random() < opt.get("rate", 0.5):
            return task_table.TASKS[target], txt
    nl = conf.get("natural_language_convert") or {}
    if (nl.get("enable", False) and spec.output_type == "text" and isinstance(extra.get("natural_language"), str)
            and rng.random() < nl.get("rate", 0.0)):
        return spec, extra["natural_language"]
    return spec, txt


def _has_think_source(extra, think_mode):
    if think_mode == "tag":
        return "question" in extra or "q_txt" in extra
    return "think_str" in extra


def _task_of(sample):
    """(TaskSpec, known): the table row (aliases and history variant resolved),
    or for a tag not in the table the generic speech -> text row and False."""
    tag = task_table.normalize_tag(sample.get("task") or task_table.DEFAULT_TASK)
    spec = task_table.get_task(tag, has_history=bool(sample.get("history")))
    if spec is None:
        return task_table.generic_understanding(tag), False
    return spec, True


def _missing_field(spec, sample, extra, think_mode, targets_required=True):
    for need in spec.needs:
        if not targets_required and need in task_table.TARGET_FIELDS:
            continue
        if need == "think_str" and think_mode == "tag":
            if extra.get("q_txt") is None and extra.get("question") is None:
                return "question (or q_txt)"
        elif need == "speech_token":
            if "speech_token" not in extra and "speech_token" not in sample:
                return need
        elif need not in extra:
            return need
    return None


def tokenize(samples, tokenizer, counter, *, prompts: dict, speech_token_num: int, rng,
             conf: dict | None = None, think_mode: str = "language", banned_words=labels.OTHER_ASSISTANT_NAMES,
             targets_required: bool = True, note_missing_task: bool = False, limited_langs=None):
    """Turn txt/task/extra into label ids, prompt ids, speech tokens and an output_type, by the task table.
    targets_required=False (decoding) keeps samples that lack target-only fields (tasks.TARGET_FIELDS).

    note_missing_task (filter_conf.filter_no_extra_info): an entry without a task is counted as the
    note "no_task". It is still trained as <TRANSCRIBE>: upstream quirk, its filter checks for a missing
    task after its tokenizer has already filled in <TRANSCRIBE>, so the flag never drops a sample there.
    limited_langs (language_conf.limited_langs): an entry whose lang (entry or extra; "none" is no
    language) is not listed is counted as the note "other_language" and trained all the same: upstream
    copies the key from WeNet's Whisper-tokenizer config and never reads it (it tokenizes with Qwen)."""
    conf = conf or {}
    eos = tokenizer.eos_token_id
    prompt_ids = {}  # tag -> encoded prompts, filled on first use
    unknown_seen = set()  # unknown tags already warned about
    banned = re.compile("|".join(re.escape(w) for w in banned_words if w)) if banned_words else None
    for sample in samples:
        key, src = sample.get("key"), sample.get("src", "?")
        extra = sample["extra"] = _extra_dict(sample)
        if note_missing_task and not sample.get("task"):
            counter.note("no_task")
        lang = sample.get("lang", extra.get("lang"))
        if limited_langs and lang not in (None, "none", *limited_langs):
            counter.note("other_language")
        spec, known = _task_of(sample)
        if not known:
            counter.note("unknown_task")
            if spec.tag not in unknown_seen:
                unknown_seen.add(spec.tag)
                prompt = "a user prompt from" if spec.tag in prompts else "no user prompt: not in"
                log.warning(f"task {spec.tag!r} in {src} is not in the task table (osum_echat/tasks.py); "
                            f"trained as speech -> text (output_type 'text') like upstream, with {prompt} "
                            f"prompt_conf_path (warned once per tag)")
        txt = str(sample.get("txt") or "")
        named = banned.search(txt) if banned is not None else None
        if named:
            counter.skip("other_assistant", src, key, f"target names {named.group()!r}")
            continue
        spec, txt = _convert(spec, patch_text(txt, spec), extra, conf, rng, think_mode)
        if txt is None:
            counter.skip("no_target", src, key, f"nothing to keep for {spec.tag} in the target text")
            continue
        missing = _missing_field(spec, sample, extra, think_mode, targets_required)
        if missing:
            counter.skip("missing_field", src, key, f"task {spec.tag} needs extra.{missing}")
            continue
        txt = target_text(txt, spec, extra, think_mode, rng)
        label = tokenizer.encode(normalize_text(txt, spec.lowercase), add_special_tokens=False)
        if not txt.endswith(task_table.NO_EOS_SUFFIX):
            label.append(eos)

        # upstream quirk: whenever extra has a "question" it is the prompt, whatever the task
        if "question" in extra:
            if not extra["question"]:
                counter.skip("missing_field", src, key, "extra.question is empty")
                continue
            sample["prompt"] = tokenizer.encode(str(extra["question"]), add_special_tokens=False)
        else:
            if spec.tag not in prompt_ids:
                prompt_ids[spec.tag] = [tokenizer.encode(p, add_special_tokens=False)
                                        for p in prompts.get(spec.tag) or []]
            choices = prompt_ids[spec.tag]
            # one randint per prompted sample, as upstream draws it (same numbers for the same seed)
            sample["prompt"] = list(choices[rng.randint(0, len(choices) - 1)]) if choices else []

        sample["speech_token"] = []
        has_tokens = bool(extra.get("speech_token", sample.get("speech_token")))
        if spec.speech_output and (targets_required or has_tokens):
            # upstream wraps only 4 of the 6 speech-output tasks (history and
            # s2s-streaming samples lose their targets there); here all are wrapped.
            wrapped, err = wrap_speech_tokens(extra.get("speech_token", sample.get("speech_token")),
                                              speech_token_num)
            if err:
                counter.skip("bad_speech_token", src, key, err)
                continue
            sample["speech_token"] = wrapped
        err = _history_tokens(sample, extra, speech_token_num)
        if err:
            counter.skip("bad_speech_token", src, key, err)
            continue
        sample.update(task=spec.tag, spec=spec, output_type=spec.output_type, txt=txt, label=label)
        yield sample


def _history_tokens(sample, extra, speech_token_num):
    for i, turn in enumerate(sample.get("history") or []):
        tokens = extra.get(f"speech_token_{i + 1}")
        turn["speech_token"] = []
        if tokens:
            wrapped, err = wrap_speech_tokens(tokens, speech_token_num)
            if err:
                return f"history turn {i + 1}: {err}"
            turn["speech_token"] = wrapped
    return None
