"""Pipeline stages. Each is a generator `stage(samples, ...)` that yields samples.

Order (built by data/dataset.py): expand_dialogue_prefix -> tokenize ->
load_audio -> filter_samples -> resample_audio -> compute_features ->
spec_aug / spec_sub / spec_trim -> shuffle -> sort -> batch -> padding.

Broken samples are skipped through `counter.skip(...)` (data/skips.py) and
never stop the stream. Randomness comes from the `rng` (random.Random) given
to a stage, seeded by the dataset from (seed, epoch, rank, worker).
"""
from __future__ import annotations

import json
import os
import re

import torch

from .. import tasks as task_table
from . import features
from ..utils import get_logger
from .batch import Batch

log = get_logger("osum_echat.data")

# --------------------------------------------------------------------------- text helpers

# upstream quirk: upstream's word list misses three commas, so Python glues
# neighbours together ("Qwen助手VirtualAssistant", "<think>小明助手",
# "<think>MOSS小助手") and "Qwen助手", "VirtualAssistant", "<think>",
# "小明助手" and "MOSS小助手" alone are *not* filtered. This is the effective list.
OTHER_ASSISTANT_NAMES = (
    "MOSS Assistant", "MOSS助手", "QWEN", "QWEN Assistant", "QWEN助手", "小智机器人", "小智助手",
    "小智AI助手", "Qwen助手VirtualAssistant", "virtual assistant", "Helper", "helper", "ChatBot",
    "chat bot", "chatbot", "Chat Bot", "AI Agent", "AI agent", "ChatGPT", "chatgpt", "<think>小明助手",
    "小红小助手", "小刚AI", "晓明助手", "阿强Bot", "阿丽小助手", "王磊AI助手", "李娜AI", "张伟助手",
    "赵敏Bot", "刘洋AI小助手", "陈晨智能助手", "<think>MOSS小助手", "QWEN小助手", "小智Bot",
    "Assistant小智", "AI小智", "ChatBot小明", "VirtualAssistant李娜", "大型语言模型", "语言模型",
)

# upstream maps fine-grained Chinese speaking-style labels onto its 9 classes
STYLE_MAP = {
    "朗读": "新闻科普", "科普百科": "新闻科普", "悬疑恐怖": "恐怖故事", "童话故事": "童话故事",
    "客服": "客服", "诗歌": "诗歌散文", "散文": "诗歌散文", "武侠评书": "有声书", "小说": "有声书",
    "历史": "有声书", "科幻": "有声书", "对话": "日常口语", "口语": "日常口语", "幽默": "其他", "其他": "其他",
}
AGE_MAP = {"<YOUTH>": "<ADULT>", "<MIDDLE_AGE>": "<ADULT>", "<MIDDLE>": "<ADULT>"}
NONE_TARGETS = ("<None>", "<NONE>", "<none>")
NEUTRAL_TAG = "<中立>"
# reply-emotion tags the tag-CoT template keeps; any other becomes NEUTRAL_TAG
TAG_COT_EMOTIONS = frozenset(
    ["愉悦", "抱歉", "开心", "愤怒", "惊讶", "厌恶", "悲伤", "害怕", "哭腔", "安慰鼓励", "中立"]
    + [f"<{x}>" for x in ("愉悦", "抱歉", "开心", "愤怒", "惊讶", "厌恶", "悲伤", "害怕", "哭腔", "安慰鼓励", "中立")])

_CJK_SPACES = re.compile(r"\s*([\u4e00-\u9fff])\s*")
_LT_SPACES = re.compile(r"\s*<\s*")
_GT_SPACES = re.compile(r"\s*>\s*")
_FIRST_TAG = re.compile(r"<[^>]+>")
_LEADING_TAG = re.compile(r"^<([^<>]+)>(.*)$", re.S)


def normalize_text(text: str, lowercase: bool) -> str:
    """Upstream's target normalisation: no spaces around CJK chars or < >; lower-case ASR only."""
    text = _CJK_SPACES.sub(r"\1", text)
    if lowercase:
        text = text.lower()
    return _GT_SPACES.sub(">", _LT_SPACES.sub("<", text))


def first_tag(text: str):
    m = _FIRST_TAG.search(text)
    return m.group() if m else None


def answer_part(text: str):
    parts = text.strip().split("<开始回答>")
    return parts[1] if len(parts) == 2 else None


def split_leading_tag(text: str):
    """("<tag>", rest) when text starts with a <tag>, else (None, text)."""
    m = _LEADING_TAG.match(text)
    return (f"<{m.group(1)}>", m.group(2).lstrip()) if m else (None, text)


def _as_tag(value, default):
    if value is None:
        return default
    value = str(value)
    return value if value.startswith("<") or value.endswith(">") else f"<{value}>"


def tag_cot(txt: str, extra: dict, rng):
    """Tag-CoT think text built from the sample's paralinguistic labels
    (upstream processor_tag_think.py). Returns (think, txt); the caller checks a question exists."""
    question = extra.get("q_txt")
    if question is None:
        question = extra.get("question")
    unk = rng.random() < 0.85  # upstream: missing labels become "<&&>" (no loss) 85% of the time
    fill = (lambda d: task_table.NO_EOS_SUFFIX) if unk else (lambda d: d)
    emotion, _ = split_leading_tag(txt)
    if emotion not in TAG_COT_EMOTIONS or emotion == NEUTRAL_TAG:
        if emotion is not None:
            txt = txt.replace(emotion, NEUTRAL_TAG)
        emotion = NEUTRAL_TAG
    q_emotion = _as_tag(extra.get("q_emotion"), None) or fill("<NEUTRAL>")
    age = _as_tag(extra.get("age"), None) or fill("<ADULT>")
    gender = _as_tag(extra.get("gender"), None) or fill("<MALE>")
    caption = _as_tag(extra.get("caption"), None) or fill("<OTHER>")
    think = task_table.TAG_COT_TEMPLATE.format(question=question, age=age, gender=gender, q_emotion=q_emotion,
                                               caption=caption, emotion=emotion)
    return think, txt


# --------------------------------------------------------------------------- expand

# upstream's tar reader resamples every history wav to this rate, whatever resample_conf says
UPSTREAM_HISTORY_RATE = 16000


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


# --------------------------------------------------------------------------- tokenize

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


def _patch_text(txt, spec):
    """Upstream's label fixes: one line; coarse age classes; style names mapped to its classes."""
    txt = txt.replace("\n", " ")
    if "<AGE>" in spec.tag:
        for old, new in AGE_MAP.items():
            txt = txt.replace(old, new)
    if "<STYLE>" in spec.tag:
        for old, new in STYLE_MAP.items():
            txt = txt.replace(f"<{old}>", f"<{new}>")
    return txt


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


def _target_text(txt, spec, extra, think_mode, rng):
    """Think wrapping and leading-tag handling of the two chain-of-thought styles."""
    if think_mode == "tag":
        if spec.tag_cot_keeps_emotion and split_leading_tag(txt)[0] is None:
            txt = NEUTRAL_TAG + txt
        if spec.think:
            think, txt = tag_cot(txt, extra, rng)
            txt = f"{task_table.THINK_OPEN}{think}{task_table.THINK_CLOSE}{txt}"
        return txt
    # upstream quirk (processor.py, language-CoT): a leading "<tag>" is cut
    # from every target, whatever the task - "<HAPPY>" alone becomes "".
    _, txt = split_leading_tag(txt)
    if spec.think and "think_str" in extra:  # absent only when decoding (targets not required)
        txt = f"{task_table.THINK_OPEN}{extra['think_str']}{task_table.THINK_CLOSE}{txt}"
    return txt


def tokenize(samples, tokenizer, counter, *, prompts: dict, speech_token_num: int, rng,
             conf: dict | None = None, think_mode: str = "language", banned_words=OTHER_ASSISTANT_NAMES,
             targets_required: bool = True):
    """Turn txt/task/extra into label ids, prompt ids, speech tokens and an output_type, by the task table.
    targets_required=False (decoding) keeps samples that lack target-only fields (tasks.TARGET_FIELDS)."""
    conf = conf or {}
    eos = tokenizer.eos_token_id
    prompt_ids = {}  # tag -> encoded prompts, filled on first use
    unknown_seen = set()  # unknown tags already warned about
    banned = re.compile("|".join(re.escape(w) for w in banned_words if w)) if banned_words else None
    for sample in samples:
        key, src = sample.get("key"), sample.get("src", "?")
        extra = sample["extra"] = _extra_dict(sample)
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
        spec, txt = _convert(spec, _patch_text(txt, spec), extra, conf, rng, think_mode)
        if txt is None:
            counter.skip("no_target", src, key, f"nothing to keep for {spec.tag} in the target text")
            continue
        missing = _missing_field(spec, sample, extra, think_mode, targets_required)
        if missing:
            counter.skip("missing_field", src, key, f"task {spec.tag} needs extra.{missing}")
            continue
        txt = _target_text(txt, spec, extra, think_mode, rng)
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


# --------------------------------------------------------------------------- audio

def _decode(audio, start=None, end=None):
    """(wav, rate, None) or (None, None, (reason, detail))."""
    if isinstance(audio, str) and not os.path.exists(audio):
        return None, None, ("missing_file", f"audio file {audio} does not exist")
    try:
        wav, rate = features.decode_audio(audio, start, end)
    except Exception as e:  # soundfile raises several types for unreadable audio
        return None, None, ("bad_audio", f"{type(e).__name__}: {e}")
    if wav.numel() == 0:
        return None, None, ("empty_audio", "audio has no samples")
    if not torch.isfinite(wav.sum()):  # one reduction: NaN/Inf anywhere makes the sum non-finite
        return None, None, ("nan_audio", "audio contains NaN or Inf")
    return wav, rate, None


def _history_turn_like_upstream(wav, rate, main_audio):
    """upstream quirk (see expand_dialogue_prefix): the turn resampled to 16 kHz,
    labelled with the main audio's rate, so resample_audio resamples it again."""
    if rate != UPSTREAM_HISTORY_RATE:
        wav = features.resample(wav, rate, UPSTREAM_HISTORY_RATE)
    if isinstance(main_audio, str) and not os.path.exists(main_audio):
        return None, None, ("missing_file", f"audio file {main_audio} does not exist")
    try:
        return wav, features.audio_sample_rate(main_audio), None
    except Exception as e:  # soundfile raises several types for unreadable audio
        return None, None, ("bad_audio", f"dialogue's main audio: {type(e).__name__}: {e}")


def load_audio(samples, counter):
    """Decode the audio of speech-input tasks (and their history turns); text-only tasks carry none."""
    for sample in samples:
        key, src = sample.get("key"), sample.get("src", "?")
        audio = sample.pop("audio", None)
        if not sample["spec"].speech_input:
            sample["wav"], sample["sample_rate"] = None, None
        else:
            if audio is None:
                counter.skip("missing_audio", src, key, f"task {sample['task']} needs audio and the sample has none")
                continue
            wav, rate, err = _decode(audio, sample.get("start"), sample.get("end"))
            if not err and sample.get("upstream_rate_of") is not None:
                wav, rate, err = _history_turn_like_upstream(wav, rate, sample["upstream_rate_of"])
            if err:
                counter.skip(err[0], src, key, err[1])
                continue
            sample["wav"], sample["sample_rate"] = wav, rate
        sample.pop("upstream_rate_of", None)
        bad, turns = None, []
        for i, turn in enumerate(sample.get("history") or []):
            if turn.get("audio") is None:
                bad = f"history turn {i + 1} has no audio"
                break
            wav, rate, err = _decode(turn["audio"])
            if err:
                bad = f"history turn {i + 1}: {err[1]}"
                break
            turns.append({k: v for k, v in turn.items() if k != "audio"} | {"wav": wav, "sample_rate": rate})
        sample["history"] = turns
        if bad:
            counter.skip("bad_history", src, key, bad)
            continue
        yield sample


def resample_audio(samples, resample_rate: int = 16000):
    for sample in samples:
        if sample.get("wav") is not None and sample["sample_rate"] != resample_rate:
            sample["wav"] = features.resample(sample["wav"], sample["sample_rate"], resample_rate)
            sample["sample_rate"] = resample_rate
        for turn in sample.get("history") or []:
            if turn["sample_rate"] != resample_rate:
                turn["wav"] = features.resample(turn["wav"], turn["sample_rate"], resample_rate)
                turn["sample_rate"] = resample_rate
        yield sample


# --------------------------------------------------------------------------- filter

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
                   token_min_length=1, max_seq_len=1000, only=None, fiter_txt_is_None=False,
                   check_speech_ratio=True, **unused):
    """Upstream's length limits. Frame limits apply to speech-input tasks only
    (upstream pads text-only samples with 10 s of noise instead)."""
    for sample in samples:
        key, src, spec = sample.get("key"), sample.get("src", "?"), sample["spec"]
        if only is not None and spec.mix_category != only:
            counter.skip("mix_category", src, key, f"{spec.output_type} is not a {only} task")
            continue
        if check_speech_ratio and spec.speech_output and len(sample["label"]) * 0.8 >= len(sample["speech_token"]):
            counter.skip("label_speech_ratio", src, key,
                         f"{len(sample['label'])} text tokens for {len(sample['speech_token'])} speech tokens")
            continue
        need = task_table.STREAM_MIN_SPEECH_PER_TEXT * len(sample["label"])
        if check_speech_ratio and spec.streaming and len(sample["speech_token"]) < need:
            counter.skip("label_speech_ratio", src, key, f"streaming needs {need} speech tokens for "
                         f"{len(sample['label'])} text tokens, has {len(sample['speech_token'])}")
            continue
        if fiter_txt_is_None and any(t in sample["txt"] for t in NONE_TARGETS):
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


# --------------------------------------------------------------------------- features

def compute_features(samples, counter, *, feats_type="log_mel_spectrogram", n_fft=400, hop_length=160,
                     num_mel_bins=80, padding=0, fbank_conf=None):
    def feat_of(wav, rate):
        if feats_type == "fbank":
            return features.fbank(wav, rate, **(fbank_conf or {}))
        return features.log_mel(wav, n_fft, hop_length, num_mel_bins, padding, rate)

    for sample in samples:
        key, src = sample.get("key"), sample.get("src", "?")
        wav = sample.pop("wav")
        if wav is None:
            sample["feat"] = torch.zeros(0, num_mel_bins)
        elif wav.size(1) < n_fft:
            counter.skip("empty_audio", src, key, f"{wav.size(1)} samples: shorter than one frame ({n_fft})")
            continue
        else:
            sample["feat"] = feat_of(wav, sample["sample_rate"])
            if sample["feat"].size(0) == 0:
                counter.skip("empty_audio", src, key, "audio gives zero feature frames")
                continue
        sample["num_samples"] = 0 if wav is None else wav.size(1)
        bad = False
        for turn in sample.get("history") or []:
            twav = turn.pop("wav")
            if twav.size(1) < n_fft:
                bad = True
                break
            turn["feat"] = feat_of(twav, turn["sample_rate"])
        if bad:
            counter.skip("bad_history", src, key, "a history turn is shorter than one frame")
            continue
        yield sample


def spec_aug(samples, rng, num_t_mask=2, num_f_mask=2, max_t=50, max_f=10, max_w=80):
    for sample in samples:
        x = sample["feat"]
        if x.size(0) > 0:
            y = x.clone()
            frames, bins = y.shape
            for _ in range(num_t_mask):
                start = rng.randint(0, frames - 1)
                y[start:min(frames, start + rng.randint(1, max_t)), :] = 0
            for _ in range(num_f_mask):
                start = rng.randint(0, bins - 1)
                y[:, start:min(bins, start + rng.randint(1, max_f))] = 0
            sample["feat"] = y
        yield sample


def spec_sub(samples, rng, max_t=20, num_t_sub=3):
    for sample in samples:
        x = sample["feat"]
        if x.size(0) > 0:
            y = x.clone()
            frames = y.size(0)
            for _ in range(num_t_sub):
                start = rng.randint(0, frames - 1)
                end = min(frames, start + rng.randint(1, max_t))
                shift = rng.randint(0, start)
                y[start:end, :] = x[start - shift:end - shift, :]
            sample["feat"] = y
        yield sample


def spec_trim(samples, rng, max_t=20):
    for sample in samples:
        x = sample["feat"]
        if x.size(0) > 0:
            length = rng.randint(1, max_t)
            if length < x.size(0) / 2:
                sample["feat"] = x[:x.size(0) - length].clone()
        yield sample


# --------------------------------------------------------------------------- shuffle / sort / batch

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
