"""The task table: one row per task tag.

Everything that depends on the task — how a sample is tokenized, which
fields it needs, which system prompt conditions the LLM, which targets are
trained, how decoding stops — is read from a `TaskSpec` here. Adding a task
is one row in `_ROWS` plus its user prompts in conf/prompt_config.yaml.

Output types (`output_type`) are upstream's names; a batch holds one of them.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Optional

# ---------------------------------------------------------------------------
# System prompts, keyed by output_type.
#
# These strings must stay byte-identical to upstream OSUM-EChat
# (wenet/osum_echat/llmasr_model_instruct_version.py, forward()): the released
# checkpoint was trained conditioned on them, so any change shifts the loss
# and the generations. Note the upstream quirks kept on purpose:
#   * `s2t_chat_fake` uses the speech-to-speech *think* prompt;
#   * the closing think marker in the prompts is "</think end>" while the
#     training targets use "<think end>";
#   * the curly apostrophe in "user’s".
# ---------------------------------------------------------------------------
_S2S = ("You are OSUM-chat, a speech-to-speech dialogue assistant by ASLP Lab. "
        "You understand both the meaning and paralinguistic cues in speech then "
        "respond with appropriate text and emotionally matching synthetic speech.")
_S2S_THINK = ("You are OSUM-chat, a speech-to-speech dialogue assistant by ASLP Lab. "
              "You understand both the meaning and paralinguistic cues in speech. "
              "Before responding, first output your reasoning inside <think>...</think end>, "
              "analyzing the user\u2019s words and vocal cues. Then generate a reply with "
              "appropriate text and emotionally matched synthetic speech.")
_S2S_STREAMING = ("You are OSUM-chat, a speech-to-speech dialogue assistant by ASLP Lab. "
                  "You analyze speech (content + paralinguistic cues) and respond with "
                  "interleaved text and emotionally-matched synthetic speech.")
_S2T_CHAT = ("You are OSUM-chat, a speech-to-text dialogue assistant by ASLP Lab. "
             "You understand both the meaning and paralinguistic cues in speech then "
             "respond exclusively with appropriate text.")
_T2T_CHAT = ("You are OSUM-chat, a text-to-text dialogue assistant by ASLP Lab. "
             "You understand user input in text then respond exclusively with appropriate text.")
_UNDERSTAND = ("You are OSUM-chat, an audio understanding assistant by ASLP Lab. "
               "You can transcribe speech accurately and analyze paralinguistic cues to "
               "provide precise text responses.")
_TTS = ("You are OSUM-chat, a speech synthesis assistant by ASLP Lab. "
        "You generate natural and fluent speech from text input.")
_TTS_STREAMING = ("You are OSUM-chat, a speech synthesis assistant by ASLP Lab. "
                  "You generate natural speech from text input and output both audio and "
                  "the original text in interleaved format.")
_S2T_THINK = ("You are OSUM-chat, a thinking-enabled speech-to-text dialogue assistant by "
              "ASLP Lab. You not only comprehend the semantic meaning and paralinguistic cues "
              "in speech but also engage in deliberate reasoning to process such information. "
              "Based on this thinking process, you then respond exclusively with appropriate text.")
# upstream's inference code (generate* in llmasr_model_instruct_version.py) does not always build the
# training sequence; prompt_style "upstream_infer" reproduces it (released numbers were produced so):
#   * ASR / understanding (`generate`) uses a garbled variant of the training sentence ("an audio
#     understanding.", "anaosum_echat2e" -- a find-and-replace accident in upstream), kept byte for byte;
#   * S2T think (`generate4chat_think`) ends the system turn without opening the user turn.
# Every other output type builds the training sequence.
_UNDERSTAND_INFER = ("You are OSUM-chat, an audio understanding. You can transcribe speech accurately and "
                     "anaosum_echat2e paralinguistic cues to provide precise text responses.")
# upstream falls back to the stock Qwen prompt for an unknown output_type
FALLBACK_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

SYSTEM_PROMPTS = {
    "text": _UNDERSTAND,
    "s2t_chat": _S2T_CHAT,
    "s2t_chat_fake": _S2S_THINK,  # upstream quirk, see above
    "s2t_chat_think": _S2T_THINK,
    "text2text": _T2T_CHAT,
    "text2token": _TTS,
    "text2token_streaming": _TTS_STREAMING,
    "speech2text_token": _S2S,
    "speech2text_token_history": _S2S,
    "speech2text_token_streaming": _S2S_STREAMING,
    "speech2text_token_think": _S2S_THINK,
}

# Chat-template pieces (strings, not ids: the tokenizer turns them into ids).
SYSTEM_START = "<|im_start|>system\n"
TURN_END = "<|im_end|>\n"
USER_START = "<|im_start|>user\n"
ASSISTANT_START = "<|im_end|>\n<|im_start|>assistant\n"  # closes the user turn

# System text (system prompt + chat markers before the user content) per output_type under
# prompt_style "upstream_infer", where it differs from the training one (see above).
UPSTREAM_INFER_SYSTEM_TEXT = {
    "text": SYSTEM_START + _UNDERSTAND_INFER + TURN_END + USER_START,
    "s2t_chat_think": SYSTEM_START + _S2T_THINK + TURN_END,  # upstream quirk: no "<|im_start|>user\n"
}
# upstream quirk (upstream_infer only): some generate functions cast the prompt embeds to bfloat16 --
# generate_tts always (a float32 model then reads bf16-rounded embeds), generate / generate4chat* /
# generate_text2text when the model is float16 or bfloat16.
UPSTREAM_INFER_BF16_PROMPT = {"text2token": "always", "text": "half", "s2t_chat": "half",
                              "s2t_chat_think": "half", "text2text": "half"}
PROMPT_STYLES = ("train", "upstream_infer")

# Target text markers used by upstream training data.
THINK_OPEN = "<think>"
THINK_CLOSE = "<think end>"
# Streaming layout (upstream): 6 text ids, then 18 speech ids, repeated; so a streaming sample needs at
# least STREAM_SPEECH_CHUNK // STREAM_TEXT_CHUNK speech tokens per text token.
STREAM_TEXT_CHUNK = 6
STREAM_SPEECH_CHUNK = 18
STREAM_MIN_SPEECH_PER_TEXT = STREAM_SPEECH_CHUNK // STREAM_TEXT_CHUNK
# The tag-CoT think chain (think_mode: tag). Upstream's exact template: the released tag-think
# checkpoint was trained on it, so its wording changes the numbers (processor_tag_think.py).
TAG_COT_TEMPLATE = ("用户说的话是:{question},年龄为:{age},性别为:{gender},情感为:{q_emotion},"
                    "声音事件为:{caption},推测使用的回复情感为:{emotion},我应该综合用户的语义和副语言信息给出专业且对应的回答")
# Tag-CoT age constraint (upstream OSUM_chat_LogitsProcessor, which hard-codes Qwen ids): once the
# think chain has produced this text, the next token must be the first token of one of the labels;
# applied once per answer. Ids are looked up with the tokenizer.
TAG_COT_AGE_PREFIX = "年龄为:<"
TAG_COT_AGE_LABELS = ("CHILD", "AD", "OLD")
# Upstream's speech repeat blocking (patches/custom_speech_ngram_blocking.py; defined, never switched
# on): a code may not run more than `run` times in a row nor occur `window_count` times in the last
# `window` codes; code 1446 (the silence-like code of the 25 Hz tokenizer) has looser limits.
SPEECH_BLOCK_DEFAULT = (5, 8, 5)  # (run, window, window_count)
SPEECH_BLOCK_PER_CODE = {1446: (10, 13, 10)}


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """Decode controls; each task row carries upstream's preset, the CLI/config may override any.

    max_text_tokens / max_speech_tokens cap the ids generated in each phase, max_total_tokens
    (None: no extra cap) all generated ids together (upstream's S2S/TTS MaxTokenStopper(2000)).
    repetition_penalty works on the text phase as transformers applies it (over the generated
    text ids); speech_repetition_penalty on speech codes only (the span marker excluded).
    """
    max_text_tokens: int = 512
    max_speech_tokens: int = 2000
    max_total_tokens: Optional[int] = None
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    speech_repetition_penalty: float = 1.0
    speech_repeat_blocking: bool = False
    tag_cot_constraint: bool = False
    max_audio_frames: int = 3000  # 30 s of 10 ms frames: Whisper's positional table
    seed: int = 0

    def greedy(self) -> "DecodeConfig":
        return dataclasses.replace(self, do_sample=False)


# upstream's per-task sampling presets (generate functions in llmasr_model_instruct_version.py);
# upstream's ASR/chat functions allow 8000 new tokens (self.max_length), text2text 200, TTS and S2S
# stop after 2000 generated ids in all.
_PRESET_UNDERSTAND = DecodeConfig(max_text_tokens=8000, max_speech_tokens=0, do_sample=True, temperature=1.0,
                                  top_k=5, top_p=0.9, repetition_penalty=1.05)
_PRESET_S2T_CHAT = DecodeConfig(max_text_tokens=8000, max_speech_tokens=0, do_sample=True, temperature=0.4,
                                top_k=2, top_p=1.0, repetition_penalty=1.05)
_PRESET_T2T = DecodeConfig(max_text_tokens=200, max_speech_tokens=0)
_PRESET_TTS = DecodeConfig(max_text_tokens=2000, max_speech_tokens=2000, max_total_tokens=2000, do_sample=True,
                           temperature=1.2, top_k=15, top_p=0.8)
_PRESET_S2S = DecodeConfig(max_text_tokens=2000, max_speech_tokens=2000, max_total_tokens=2000, do_sample=True,
                           temperature=1.2, top_k=10, top_p=0.9, tag_cot_constraint=True)

# Fields of `needs` that are training targets, not inputs: decoding does without them.
TARGET_FIELDS = ("speech_token", "think_str")
# A target ending in this string gets no eos appended (upstream "<&&>").
NO_EOS_SUFFIX = "<&&>"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Everything the pipeline, the model assembly and decoding need per tag.

    Data side:
      input         "speech" (a wav is required) or "text" (no audio)
      needs         extra/sample fields that must be present, else skip
      lowercase     lower-case the target text (upstream: <TRANSCRIBE> only)
      think         target is wrapped as <think>...<think end>answer
      speech_output speech tokens are a training target (wrapped with
                    speech_token_num-1 at both ends)
      only_x        tag this task turns into under the "only X" conversion
      only_x_take   how the target is cut for it: "first_tag" | "answer"
      streaming_tag / think_tag   tag used by the random streaming / think
                    conversions (None: not convertible)
    The user prompt of every sample is extra.question when the sample has one
    (upstream does so whatever the task), else a seeded pick from the tag's
    prompts in conf/prompt_config.yaml, else none.
    Model side:
      system_prompt the upstream system sentence for this output_type
      uses_prompt   the user prompt embeds go into the sequence
      text_target   the text labels are a training target
      streaming     text and speech tokens are interleaved
      embeds_history previous turns are embedded before the current one
                    (upstream: every speech-in, speech-out type)
      seq_budget_factor  share of max_seq_in_batch a dynamic batch of this task
                    may fill (upstream's per-type factors for speech-to-speech)
      tag_cot_keeps_emotion  tag-CoT keeps the target's leading emotion tag
                    (adding the neutral one when absent)
    Decode side:
      decode        upstream's DecodeConfig preset for the task
      decode_phases (derived) "text", "speech", "text_speech" or "interleave"
    """
    tag: str
    output_type: str
    input: str = "speech"
    needs: tuple = ()
    lowercase: bool = False
    think: bool = False
    speech_output: bool = False
    only_x: Optional[str] = None
    only_x_take: Optional[str] = None
    streaming_tag: Optional[str] = None
    think_tag: Optional[str] = None
    uses_prompt: bool = False
    text_target: bool = True
    streaming: bool = False
    seq_budget_factor: float = 1.0
    tag_cot_keeps_emotion: bool = False
    decode: DecodeConfig = _PRESET_UNDERSTAND

    @property
    def decode_phases(self) -> str:
        """What is decoded after the assistant start: text (ends at the text eos), speech (the
        span marker is fed, ends when it closes), text then speech, or the 6:18 interleave."""
        if self.streaming:
            return "interleave"
        if self.speech_output:
            return "text_speech" if self.text_target else "speech"
        return "text"

    def infer_system_text(self, prompt_style: str) -> str:
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style {prompt_style!r}: expected one of {', '.join(PROMPT_STYLES)}")
        if prompt_style == "upstream_infer":
            return UPSTREAM_INFER_SYSTEM_TEXT.get(self.output_type, self.system_text)
        return self.system_text

    @property
    def system_prompt(self) -> str:
        return SYSTEM_PROMPTS.get(self.output_type, FALLBACK_SYSTEM_PROMPT)

    @property
    def system_text(self) -> str:
        """Exact text upstream tokenizes before the user content."""
        return SYSTEM_START + self.system_prompt + TURN_END + USER_START

    @property
    def speech_input(self) -> bool:
        return self.input == "speech"

    @property
    def embeds_history(self) -> bool:
        return self.speech_input and self.speech_output

    @property
    def mix_category(self) -> str:
        """Which of the four training lists it belongs to: s2t, t2s, s2s or t2t."""
        return ("s" if self.speech_input else "t") + "2" + ("s" if self.speech_output else "t")


def _understanding(tag: str, **kw) -> TaskSpec:
    """Speech in, text out, user prompt from prompt_config (upstream output_type 'text')."""
    return TaskSpec(tag=tag, output_type="text", uses_prompt=True, **kw)


# Understanding tags from upstream conf/prompt_config.yaml. "<TRANSCRIBE> X"
# tasks in upstream's asr_X_set may be converted to "X" only, keeping the
# first <tag> of the target.
_ASR_X = ["<EMOTION>", "<STYLE>", "<CAPTION>", "<GENDER>", "<AGE>"]
_OTHER_UNDERSTANDING = [
    "<TRANSCRIBE> <ALIGN>", "<TRANSCRIBE> <PUNCTUATION>", "<CAPTION> <AUDIO>",
    "<TRANSCRIBE> <AGE> <GENDER>", "<AGE> <GENDER>",
    "<TRANSCRIBE> <STYLE> <AGE> <GENDER>", "<STYLE> <AGE> <GENDER>",
    "<TRANSCRIBE> <CAPTION> <AGE> <GENDER>", "<TRANSCRIBE> <EMOTION> <AGE> <GENDER>",
    "<TRANSCRIBE> <AGE> <GENDER> <STYLE> <EMOTION>",
    "<TRANSCRIBE> <CAPTION> <AGE> <GENDER> <EMOTION> <STYLE>",
]

_ROWS = [
    _understanding("<TRANSCRIBE>", lowercase=True),
    *[_understanding(f"<TRANSCRIBE> {x}", only_x=x, only_x_take="first_tag") for x in _ASR_X],
    *[_understanding(x) for x in _ASR_X],
    *[_understanding(x) for x in _OTHER_UNDERSTANDING],
    _understanding("<TRANSCRIBE> <S2TCHAT>", only_x="<S2TCHAT>", only_x_take="answer"),
    # speech -> text chat (no user prompt in the sequence)
    TaskSpec("<S2TCHAT>", "s2t_chat", think_tag="<S2TCHAT> <THINKER>", tag_cot_keeps_emotion=True,
             decode=_PRESET_S2T_CHAT),
    TaskSpec("<S2TCHAT> <THINKER>", "s2t_chat_think", think=True, needs=("think_str",),
             tag_cot_keeps_emotion=True, decode=_PRESET_S2T_CHAT),
    TaskSpec("<S2TCHAT_FAKE>", "s2t_chat_fake", decode=_PRESET_S2T_CHAT),
    # text -> text chat: the question is the user prompt
    TaskSpec("<TEXT2TEXT>", "text2text", input="text", needs=("question",),
             uses_prompt=True, decode=_PRESET_T2T),
    # TTS: the text is the input, speech tokens the target
    TaskSpec("<TEXT2TOKEN>", "text2token", input="text", needs=("speech_token",),
             speech_output=True, text_target=False, streaming_tag="<TEXT2TOKEN> <STREAMING>",
             decode=_PRESET_TTS),
    TaskSpec("<TEXT2TOKEN> <STREAMING>", "text2token_streaming", input="text",
             needs=("speech_token",), speech_output=True, streaming=True, decode=_PRESET_TTS),
    # speech -> text + speech tokens
    TaskSpec("<S2TCHAT> <TEXT2TOKEN>", "speech2text_token", needs=("speech_token",),
             speech_output=True, streaming_tag="<S2TCHAT> <TEXT2TOKEN> <STREAMING>",
             think_tag="<S2TCHAT> <TEXT2TOKEN> <THINK>", seq_budget_factor=0.8, tag_cot_keeps_emotion=True,
             decode=_PRESET_S2S),
    TaskSpec("<S2TCHAT> <TEXT2TOKEN> <STREAMING>", "speech2text_token_streaming",
             needs=("speech_token",), speech_output=True, streaming=True, seq_budget_factor=0.6,
             decode=_PRESET_S2S),
    TaskSpec("<S2TCHAT> <TEXT2TOKEN> <THINK>", "speech2text_token_think",
             needs=("speech_token", "think_str"), speech_output=True, think=True, seq_budget_factor=0.6,
             tag_cot_keeps_emotion=True, decode=_PRESET_S2S),
    TaskSpec("<S2TCHAT> <TEXT2TOKEN> <HISTORY>", "speech2text_token_history",
             needs=("speech_token",), speech_output=True, seq_budget_factor=0.6, decode=_PRESET_S2S),
]

TASKS: dict[str, TaskSpec] = {row.tag: row for row in _ROWS}

# Spellings upstream rewrites to a canonical tag before tokenizing.
ALIASES = {
    "TEXT2TOKEN": "<TEXT2TOKEN>",
    "<Speech2TEXTandTOKEN>": "<S2TCHAT> <TEXT2TOKEN>",
    "<S2TCHAT> <TEXT2TOKEN> <EMOTION>": "<S2TCHAT> <TEXT2TOKEN>",
}

# upstream: a "<S2TCHAT> <TEXT2TOKEN>" sample that carries history turns is
# trained as the history task.
HISTORY_VARIANT = {"<S2TCHAT> <TEXT2TOKEN>": "<S2TCHAT> <TEXT2TOKEN> <HISTORY>"}

DEFAULT_TASK = "<TRANSCRIBE>"  # upstream's default when a sample has no task

OUTPUT_TYPES = tuple(sorted({row.output_type for row in _ROWS}))
MIX_CATEGORIES = ("s2t", "t2s", "s2s", "t2t")

_SPACES = re.compile(r"\s+")


def normalize_tag(tag: str) -> str:
    """Canonical spelling: single spaces between <..> parts, aliases resolved."""
    tag = _SPACES.sub(" ", str(tag).strip())
    return ALIASES.get(tag, tag)


# Names a person may type for a task (CLI --task, the Python API, the web demo) besides its tag: the
# runtime's helper names, and spellings that can mean only one row. Data lists never go through these.
HELPER_TASKS = {
    "transcribe": "<TRANSCRIBE>",
    "chat": "<S2TCHAT>",
    "chat_think": "<S2TCHAT> <THINKER>",
    "tts": "<TEXT2TOKEN>",
    "s2s": "<S2TCHAT> <TEXT2TOKEN>",
    "s2s_think": "<S2TCHAT> <TEXT2TOKEN> <THINK>",
    "t2t": "<TEXT2TEXT>",
}
USER_SPELLINGS = {"<S2TCHAT> <THINK>": "<S2TCHAT> <THINKER>"}  # the text-out think chat
LIST_TASKS_HINT = "see `python -m osum_echat.bin.chat --list-tasks`"
_RUN_TOGETHER = re.compile(r">\s*<")


class UnknownTaskError(ValueError):
    """A task name that is no row of the table and cannot be read as one; the message names the closest."""


def resolve_task(name: str) -> str:
    """A task name a person typed -> the tag of its row. Unambiguous spellings are read as their tag:
    a helper name (`transcribe`), tags run together (`<S2TCHAT><THINK>`), other letter case, a bare
    name (`TEXT2TEXT`); anything else raises UnknownTaskError naming the closest tags."""
    raw = str(name or "").strip()
    if not raw:
        raise UnknownTaskError(f"no task given; {LIST_TASKS_HINT}")
    if raw.lower() in HELPER_TASKS:
        return HELPER_TASKS[raw.lower()]
    spaced = _SPACES.sub(" ", _RUN_TOGETHER.sub("> <", raw))
    bare = " ".join(w if w.startswith("<") else f"<{w}>" for w in spaced.split())
    for candidate in (spaced, spaced.upper(), bare.upper()):
        tag = normalize_tag(candidate)
        tag = USER_SPELLINGS.get(tag, tag)
        if tag in TASKS:
            return tag
    raise UnknownTaskError(f"unknown task {raw!r}" + (f"; closest: {', '.join(closest_tasks(raw))}"
                                                      if closest_tasks(raw) else "") + f"; {LIST_TASKS_HINT}")


def closest_tasks(name: str, n: int = 3) -> list:
    """The table's tags (and helper names) spelled most like `name`."""
    import difflib

    spaced = _SPACES.sub(" ", _RUN_TOGETHER.sub("> <", str(name).strip())).upper()
    names = {t.upper(): t for t in TASKS} | {h.upper(): tag for h, tag in HELPER_TASKS.items()}
    tags = [names[c] for c in difflib.get_close_matches(spaced, list(names), n=2 * n, cutoff=0.5)]
    return list(dict.fromkeys(tags))[:n]


def get_task(tag: str, has_history: bool = False) -> Optional[TaskSpec]:
    """Row for `tag` (aliases resolved), or None when the tag is unknown."""
    tag = normalize_tag(tag)
    if has_history and tag in HISTORY_VARIANT:
        tag = HISTORY_VARIANT[tag]
    return TASKS.get(tag)


def generic_understanding(tag: str) -> TaskSpec:
    """Row for any tag absent from the table: upstream trains every tag it does
    not know as output_type "text" (speech in, text out); its user prompt comes
    from prompt_config when the tag is listed there, else there is none."""
    return _understanding(normalize_tag(tag))


def tasks_with_output_type(output_type: str) -> list:
    return [row for row in _ROWS if row.output_type == output_type]


def system_prompt_for(output_type: str) -> str:
    return SYSTEM_PROMPTS.get(output_type, FALLBACK_SYSTEM_PROMPT)
