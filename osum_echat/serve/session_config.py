"""A realtime session's settings: what `session.update` may change, and the session object sent back.

OpenAI fields: instructions (the user prompt of tasks that read one), audio.input.format /
audio.output.format (audio/pcm at 24,000 Hz), audio.input.turn_detection (server_vad or null),
audio.output.voice (echoed; the voice is the server's --speaker_prompt_wav), output_modalities
(must fit the task). This model's own fields go under "osum":

    "osum": {"task": "s2s" | "s2s_think" | "chat" | "chat_think" | "t2t" | "tts" | "transcribe" | a task tag,
             "variant": "a" | "b",          # the think checkpoint (server started with --checkpoint_b)
             "decode": {"max_text_tokens": 64, "greedy": true, ...}}   # DecodeConfig fields
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Optional

from osum_echat import tasks as task_table
from osum_echat.serve.audio import EXTENSION_RATES, WIRE_RATES

SERVER_VAD_DEFAULTS = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
                       "create_response": True, "interrupt_response": True}  # OpenAI's defaults
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")  # -> default
DECODE_FIELDS = {f.name: f.type for f in dataclasses.fields(task_table.DecodeConfig)} | {"greedy": "bool"}
OSUM_KEY = "osum"


class SessionUpdateError(ValueError):
    def __init__(self, code: str, message: str, param: str):
        super().__init__(message)
        self.code, self.param = code, param


def resolve_task(name: str) -> str:
    try:
        return task_table.resolve_task(name)
    except task_table.UnknownTaskError as e:
        raise SessionUpdateError("unknown_task", f"{e} (session.osum.task also takes "
                                 f"{', '.join(task_table.HELPER_TASKS)})", "session.osum.task") from None


@dataclasses.dataclass
class SessionConfig:
    task: str
    audio_on: bool  # token2wav loaded
    instructions: str = ""
    voice: str = "alloy"
    turn_detection: Optional[dict] = dataclasses.field(default_factory=lambda: dict(SERVER_VAD_DEFAULTS))
    variant: Optional[str] = None
    decode: dict = dataclasses.field(default_factory=dict)
    max_output_tokens: Optional[int] = None  # OpenAI's cap on all output tokens -> DecodeConfig.max_total_tokens
    transcription: Optional[dict] = None  # audio.input.transcription: the model's own ASR of each user turn
    input_rate: int = WIRE_RATES[0]  # PCM16 rates on the wire (extension: session.osum.input_rate / output_rate)
    output_rate: int = WIRE_RATES[0]

    @property
    def spec(self):
        return task_table.get_task(self.task)

    @property
    def speaks(self) -> bool:
        return self.spec.speech_output

    @property
    def modalities(self) -> list:
        return ["audio"] if self.speaks else ["text"]

    def session_object(self, session_id: str, model: str, variants: tuple = (), voices: tuple = ()) -> dict:
        pcm = {"type": "audio/pcm", "rate": WIRE_RATES[0]}
        spec = self.spec
        return {"type": "realtime", "object": "realtime.session", "id": session_id, "model": model,
                "instructions": self.instructions, "output_modalities": self.modalities,
                "max_output_tokens": self.max_output_tokens or "inf", "tools": [], "tool_choice": "auto",
                "audio": {"input": {"format": pcm, "turn_detection": copy.deepcopy(self.turn_detection),
                                    "transcription": copy.deepcopy(self.transcription), "noise_reduction": None},
                          "output": {"format": pcm, "voice": self.voice, "speed": 1.0}},
                OSUM_KEY: {"task": self.task, "input": spec.input, "think": spec.think, "speaks": spec.speech_output,
                           "audio_output": self.audio_on, "variant": self.variant, "variants": list(variants),
                           "voices": list(voices), "input_rate": self.input_rate, "output_rate": self.output_rate,
                           "decode": dict(self.decode)}}

    def updated(self, session: dict, variants: tuple = (), voices: tuple = ()) -> "SessionConfig":
        """A new config with `session` (a session.update body) applied; SessionUpdateError names the field."""
        if not isinstance(session, dict):
            raise SessionUpdateError("invalid_value", "session must be an object", "session")
        new = copy.deepcopy(self)
        if session.get("type", "realtime") != "realtime":
            raise SessionUpdateError("unsupported_session_type", "only realtime sessions are served "
                                     "(no transcription sessions)", "session.type")
        if "instructions" in session:
            if not isinstance(session["instructions"], str):
                raise SessionUpdateError("invalid_value", "instructions must be a string", "session.instructions")
            new.instructions = session["instructions"]
        if "max_output_tokens" in session:
            cap = session["max_output_tokens"]
            if cap in (None, "inf"):
                new.max_output_tokens = None
            elif isinstance(cap, int) and not isinstance(cap, bool) and cap >= 1:
                new.max_output_tokens = cap
            else:
                raise SessionUpdateError("invalid_value", "max_output_tokens must be an integer >= 1 or \"inf\"",
                                         "session.max_output_tokens")
        audio = _object(session.get("audio"), "session.audio")
        sides = {side: _object(audio.get(side), f"session.audio.{side}") for side in ("input", "output")}
        for side, conf in sides.items():
            if conf.get("format") is not None:
                _check_format(conf["format"], f"session.audio.{side}.format")
        if "turn_detection" in sides["input"]:
            new.turn_detection = _turn_detection(sides["input"]["turn_detection"])
        if "transcription" in sides["input"]:
            new.transcription = _transcription(sides["input"]["transcription"])
        voice = sides["output"].get("voice")
        if voice is not None:
            voice = voice.get("id") if isinstance(voice, dict) else voice
            if not isinstance(voice, str) or (voice not in voices and voice not in OPENAI_VOICES):
                raise SessionUpdateError("unknown_voice", f"voice {voice!r}: this server has "
                                         f"{list(voices) or 'no voices'} (--voices_dir NAME.wav files); OpenAI's "
                                         "voice names use the server's speaker prompt", "session.audio.output.voice")
            new.voice = voice
        osum = _object(session.get(OSUM_KEY), f"session.{OSUM_KEY}")
        if "task" in osum:
            new.task = resolve_task(str(osum["task"]))
        if "variant" in osum:
            if not isinstance(osum["variant"], str) or osum["variant"] not in variants:
                raise SessionUpdateError("unknown_variant", f"variant {osum['variant']!r}: this server has "
                                         f"{list(variants) or 'one checkpoint (start it with --checkpoint_b)'}",
                                         f"session.{OSUM_KEY}.variant")
            new.variant = osum["variant"]
        if "decode" in osum:
            new.decode = _decode(osum["decode"])
        for side in ("input_rate", "output_rate"):
            if side in osum:
                rate = osum[side]
                if rate not in EXTENSION_RATES or isinstance(rate, bool):
                    raise SessionUpdateError("unsupported_sample_rate", f"{side} {rate!r}: PCM16 is served at "
                                             f"{', '.join(map(str, EXTENSION_RATES))} Hz", f"session.{OSUM_KEY}.{side}")
                setattr(new, side, rate)
        if new.speaks and not new.audio_on:
            raise SessionUpdateError("audio_output_off", f"task {new.task} speaks, but this server runs without "
                                     "--token2wav_dir: audio output is off; choose a text task "
                                     "(session.osum.task: chat, t2t, transcribe)", f"session.{OSUM_KEY}.task")
        modalities = session.get("output_modalities")
        if modalities is not None and (not isinstance(modalities, list) or modalities != new.modalities):
            raise SessionUpdateError("unsupported_modalities", f"output_modalities {modalities} do not fit task "
                                     f"{new.task}, which answers with {new.modalities}; choose the task with "
                                     f"session.{OSUM_KEY}.task", "session.output_modalities")
        return new


def _object(value, param: str) -> dict:
    """A JSON object field ({} when absent or null)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SessionUpdateError("invalid_value", f"{param} must be an object", param)
    return value


def _check_format(fmt, param: str) -> None:
    if not isinstance(fmt, dict) or fmt.get("type", "audio/pcm") != "audio/pcm":
        raise SessionUpdateError("unsupported_audio_format", "only audio/pcm (PCM16 mono) is served", param + ".type")
    rate = fmt.get("rate", WIRE_RATES[0])
    if rate not in WIRE_RATES:
        raise SessionUpdateError("unsupported_sample_rate", f"rate {rate}: audio/pcm is served at "
                                 f"{', '.join(map(str, WIRE_RATES))} Hz", param + ".rate")


def _turn_detection(td) -> Optional[dict]:
    param = "session.audio.input.turn_detection"
    if td is None:
        return None
    if not isinstance(td, dict) or td.get("type") != "server_vad":
        raise SessionUpdateError("unsupported_turn_detection", "turn_detection must be null (the client commits) "
                                 "or {type: server_vad, ...}", param + ".type")
    out = dict(SERVER_VAD_DEFAULTS)
    for key, value in td.items():
        if key == "type" or value is None:
            continue
        if key not in SERVER_VAD_DEFAULTS:
            continue  # idle_timeout_ms and future fields: accepted, not used
        default = SERVER_VAD_DEFAULTS[key]
        ok = isinstance(value, bool) if isinstance(default, bool) else (
            isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0)
        if not ok or (key == "threshold" and not 0 < value < 1):
            raise SessionUpdateError("invalid_value", f"turn_detection.{key}={value!r} is not valid", f"{param}.{key}")
        out[key] = value
    return out


def _transcription(value) -> Optional[dict]:
    """null (off) or {model, language, prompt}: any model name is accepted and answered by the
    loaded checkpoint's <TRANSCRIBE> task; language and prompt are echoed, not used."""
    param = "session.audio.input.transcription"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SessionUpdateError("invalid_value", "transcription must be null or an object {model, language, prompt}",
                                 param)
    out = {}
    for key in ("model", "language", "prompt"):
        if value.get(key) is not None:
            if not isinstance(value[key], str):
                raise SessionUpdateError("invalid_value", f"transcription.{key} must be a string", f"{param}.{key}")
            out[key] = value[key]
    return out


def _decode(decode) -> dict:
    param = f"session.{OSUM_KEY}.decode"
    if not isinstance(decode, dict):
        raise SessionUpdateError("invalid_value", "decode must be an object of DecodeConfig fields", param)
    unknown = sorted(set(decode) - set(DECODE_FIELDS))
    if unknown:
        raise SessionUpdateError("unknown_decode_field", f"unknown decode field(s) {unknown}; known: "
                                 f"{', '.join(DECODE_FIELDS)}", f"{param}.{unknown[0]}")
    return dict(decode)
