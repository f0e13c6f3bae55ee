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
    TaskSpec("<S2TCHAT>", "s2t_chat", think_tag="<S2TCHAT> <THINKER>", tag_cot_keeps_emotion=True),
    TaskSpec("<S2TCHAT> <THINKER>", "s2t_chat_think", think=True, needs=("think_str",),
             tag_cot_keeps_emotion=True),
    TaskSpec("<S2TCHAT_FAKE>", "s2t_chat_fake"),
    # text -> text chat: the question is the user prompt
    TaskSpec("<TEXT2TEXT>", "text2text", input="text", needs=("question",),
             uses_prompt=True),
    # TTS: the text is the input, speech tokens the target
    TaskSpec("<TEXT2TOKEN>", "text2token", input="text", needs=("speech_token",),
             speech_output=True, text_target=False, streaming_tag="<TEXT2TOKEN> <STREAMING>"),
    TaskSpec("<TEXT2TOKEN> <STREAMING>", "text2token_streaming", input="text",
             needs=("speech_token",), speech_output=True, streaming=True),
    # speech -> text + speech tokens
    TaskSpec("<S2TCHAT> <TEXT2TOKEN>", "speech2text_token", needs=("speech_token",),
             speech_output=True, streaming_tag="<S2TCHAT> <TEXT2TOKEN> <STREAMING>",
             think_tag="<S2TCHAT> <TEXT2TOKEN> <THINK>", seq_budget_factor=0.8, tag_cot_keeps_emotion=True),
    TaskSpec("<S2TCHAT> <TEXT2TOKEN> <STREAMING>", "speech2text_token_streaming",
             needs=("speech_token",), speech_output=True, streaming=True, seq_budget_factor=0.6),
    TaskSpec("<S2TCHAT> <TEXT2TOKEN> <THINK>", "speech2text_token_think",
             needs=("speech_token", "think_str"), speech_output=True, think=True, seq_budget_factor=0.6,
             tag_cot_keeps_emotion=True),
    TaskSpec("<S2TCHAT> <TEXT2TOKEN> <HISTORY>", "speech2text_token_history",
             needs=("speech_token",), speech_output=True, seq_budget_factor=0.6),
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
