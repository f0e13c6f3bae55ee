"""Ask one question of a checkpoint: any task of the task table on one utterance.

    pipe = ChatPipeline.from_files("conf/ct_config.yaml", "exp/stage3/final.pt", token2wav_dir="CosyVoice-300M-25Hz")
    r = pipe.run("<S2TCHAT> <TEXT2TOKEN> <THINK>", wav="q.wav")
    r.text, r.think, r.speech_tokens, r.audio, r.timings, r.notes
    pipe.transcribe("q.wav"); pipe.understand("q.wav", "<EMOTION>"); pipe.tts("hello")

The model, tokenizer and token2wav are loaded once. A request is turned into the sample dict a
data source yields (key, txt, task, extra, history, audio) and goes through the repo's own data
pipeline (`OsumDataset.process`: tokenize, load/resample audio, log-mel, padding), so the model
sees exactly what decoding a list would give it. Decoding presets come from the task table; any
decode control may be overridden per call (`pipe.run(..., max_text_tokens=64, do_sample=False)`).

Bad input raises `ChatInputError` (a ValueError; `.reason` is a short code such as not_audio,
audio_too_long, empty_text, missing_input, prompt_too_long) with one sentence saying what to do.
Input the model takes after a fix-up (stereo mixed to mono, another sample rate resampled, a tag
the task table does not know run as speech -> text, a user prompt the task does not read) runs and
the fix-up is said in `Result.notes`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile
import torch

from osum_echat import tasks as task_table
from osum_echat.data.dataset import OsumDataset, one_by_one_config
from osum_echat.data.batch import Batch
from osum_echat.data.skips import SkipCounter
from osum_echat.generation.decode import Decoder
from osum_echat.utils import get_logger

log = get_logger("osum_echat.runtime")


# The thin helpers: which task-table row each one runs (the table's names people may type too).
HELPER_TASKS = task_table.HELPER_TASKS
assert all(tag in task_table.TASKS for tag in HELPER_TASKS.values())


class ChatInputError(ValueError):
    """A request that cannot run as given; `reason` is a short code, the message says what to do."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclasses.dataclass
class Turn:
    """One exchange of a conversation, kept as history for the next request."""
    user_audio: object  # a path or the bytes of an audio file (what the user said)
    text: str  # the model's answer
    speech_tokens: list  # the model's speech codes (0 .. speech_token_num-2)
    seconds: float = 0.0  # duration of user_audio


@dataclasses.dataclass
class Result:
    task: str
    output_type: str
    text: str
    think: str
    speech_tokens: list
    audio: Optional[torch.Tensor] = None  # 1-D float32 at sample_rate, when token2wav is configured
    sample_rate: Optional[int] = None
    notes: list = dataclasses.field(default_factory=list)
    timings: dict = dataclasses.field(default_factory=dict)  # seconds: encoder, llm, token2wav, first_audio, total
    history_turns: int = 0  # history turns the model saw
    input_tokens: int = 0  # positions of the prompt the LLM read (system text, history, speech, text)
    text_tokens: int = 0  # text ids the LLM decoded (think included, its end id not)
    cancelled: bool = False  # a stream stopped early: text, think, speech_tokens, audio hold what was sent

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("audio")
        return d


# ------------------------------------------------------------------ input checks

def audio_source(wav):
    """A path (str/Path), the bytes of an audio file, or (samples, sample_rate) -> path or bytes."""
    if isinstance(wav, (str, Path)):
        if not Path(wav).is_file():
            raise ChatInputError("missing_file", f"audio file {wav} does not exist")
        return str(wav)
    if isinstance(wav, (bytes, bytearray)):
        return bytes(wav)
    if isinstance(wav, tuple) and len(wav) == 2:
        samples, rate = wav
        samples = np.asarray(samples.cpu() if isinstance(samples, torch.Tensor) else samples, dtype=np.float32)
        if samples.ndim == 2 and samples.shape[0] < samples.shape[1]:
            samples = samples.T  # (channels, n) -> (n, channels)
        buf = io.BytesIO()
        soundfile.write(buf, samples, int(rate), format="WAV", subtype="FLOAT")
        return buf.getvalue()
    raise ChatInputError("not_audio", f"wav must be a path, audio-file bytes or (samples, sample_rate), "
                                      f"got {type(wav).__name__}")


def check_audio(source, sample_rate: int, max_seconds: float = float("inf")):
    """(seconds, notes) for audio the model can take; ChatInputError otherwise."""
    name = source if isinstance(source, str) else "the uploaded audio"
    try:
        info = soundfile.info(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Exception as e:  # soundfile raises several types for what is not audio
        raise ChatInputError("not_audio", f"{name} is not an audio file soundfile can read "
                                          f"(wav, flac, ogg, mp3): {type(e).__name__}") from None
    if info.frames == 0:
        raise ChatInputError("empty_audio", f"{name} has no samples")
    seconds = info.frames / info.samplerate
    if seconds > max_seconds:
        raise ChatInputError("audio_too_long", f"{name} lasts {seconds:.1f} s; the limit is {max_seconds:g} s: "
                                               "cut it into shorter pieces")
    notes = []
    if info.channels > 1:
        notes.append(f"audio has {info.channels} channels: mixed to mono")
    if info.samplerate != sample_rate:
        notes.append(f"audio sample rate {info.samplerate} Hz: resampled to {sample_rate} Hz")
    return seconds, notes


class _LastSkip(SkipCounter):
    """Keeps the reason a request was dropped by the pipeline (instead of logging it)."""

    def __init__(self):
        super().__init__(max_workers=0)
        self.last = None

    def skip(self, reason, where, key, detail=""):
        self.last = (reason, detail)


@contextlib.contextmanager
def _timed(module: torch.nn.Module, totals: dict, name: str):
    """Adds the wall time of every forward of `module` run by this thread to totals[name] (requests
    decoded in other threads at the same time run the same module)."""
    starts = []
    me = threading.get_ident()

    def pre(*_):
        if threading.get_ident() == me:
            starts.append(time.perf_counter())

    def post(*_):
        if threading.get_ident() == me and starts:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - starts.pop()

    hooks = [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


# ------------------------------------------------------------------ the pipeline

class ChatPipeline:
    """One model (+ optional token2wav) loaded once; `run` any task on one utterance."""

    def __init__(self, model, tokenizer, config: dict, token2wav=None, *, speaker_prompt=None,
                 max_audio_seconds: Optional[float] = None, decode_options: Optional[dict] = None):
        """`max_audio_seconds`: longest user audio (default: the task preset's max_audio_frames, Whisper's
        30 s window); `decode_options`: Decoder keyword arguments for every request (overrides, greedy, prompt_style),
        as `decode_options_from_args` gives them; a request's own overrides go on top."""
        self.model = model.eval()
        self.decode_options = {"overrides": {}, "greedy": False, **(decode_options or {})}
        self.tokenizer = tokenizer
        self.config = config
        self.token2wav = token2wav
        self.speaker_prompt = speaker_prompt
        self.max_audio_seconds = max_audio_seconds
        self.counter = _LastSkip()
        self.dataset = OsumDataset(one_by_one_config(config), "raw", None, tokenizer, mode="decode",
                                   counter=self.counter)
        conf = config.get("dataset_conf") or {}
        self.sample_rate = int((conf.get("resample_conf") or {}).get("resample_rate", 16000))
        hop = int((conf.get("log_mel_spectrogram_conf") or {}).get("hop_length", 160))
        self.frames_per_second = self.sample_rate / hop
        self.variants = None  # osum_echat.infer.variants.WeightVariants when two checkpoints share the model
        self._scheduler = self._voice_batcher = None
        self.voice_worker = None  # token2wav/worker.VoiceWorker: streams render in that process instead
        self._scheduler_lock = threading.Lock()
        self._batch_lock = threading.Lock()

    @classmethod
    def from_files(cls, config_path, checkpoint, token2wav_dir=None, *, device=None, dtype="float32",
                   overrides=(), checkpoint_b=None, speaker_prompt_wav=None, **kw) -> "ChatPipeline":
        """Build from a config YAML (None: the train.yaml saved beside the checkpoint) and a checkpoint;
        `checkpoint_b` (the other think checkpoint) shares the same model and costs only its differing
        weights (see `use_variant`)."""
        from osum_echat.config import load_config, mismatch_message, resolve_config
        from osum_echat.models import load_for_inference
        from osum_echat.models.checkpoint import CheckpointError
        from osum_echat.tokenizer import load_tokenizer
        from osum_echat.train.devices import select_device

        device = select_device(device)
        config_path = resolve_config(config_path, checkpoint)
        config = load_config(config_path, list(overrides))
        tokenizer = load_tokenizer(config["llm_path"])
        try:
            model = load_for_inference(config, checkpoint, device, dtype, tokenizer)  # strict, no throw-away copy
        except CheckpointError as e:
            if not Path(checkpoint).is_file():
                raise
            raise CheckpointError(mismatch_message(config_path, checkpoint, e)) from None
        t2w = prompt = None
        if token2wav_dir:
            from osum_echat.token2wav import Token2Wav
            t2w = Token2Wav.from_dir(token2wav_dir, device=device)
            prompt = t2w.prompt_from_wav(speaker_prompt_wav) if speaker_prompt_wav else None
        pipe = cls(model, tokenizer, config, t2w, speaker_prompt=prompt, **kw)
        if checkpoint_b:
            from osum_echat.infer.variants import WeightVariants
            pipe.variants = WeightVariants(model, {"a": checkpoint, "b": checkpoint_b})
        return pipe

    def use_variant(self, name: str) -> None:
        """Switch to checkpoint "a" or "b" (from_files(checkpoint_b=...))."""
        if self.variants is None:
            raise ChatInputError("no_variant", "only one checkpoint is loaded; pass checkpoint_b to switch")
        self.variants.use(name)

    # -------------------------------------------------------------- requests
    def sample(self, task: str, wav=None, text: Optional[str] = None, prompt: Optional[str] = None,
               history: Optional[list] = None, key: str = "request"):
        """(sample dict as a data source yields it, TaskSpec, notes) for one request."""
        try:
            tag = task_table.resolve_task(task)
        except task_table.UnknownTaskError as e:
            raise ChatInputError("unknown_task", str(e)) from None
        spec = task_table.get_task(tag, has_history=bool(history))
        notes = [] if tag == str(task).strip() else [f"task {str(task).strip()!r} read as {tag}"]
        sample = {"key": key, "task": tag, "txt": "", "extra": {}, "src": "request"}
        if spec.speech_input:
            if wav is None:
                raise ChatInputError("missing_input", f"task {tag} takes speech: give a wav")
            sample["audio"] = audio_source(wav)
            seconds, audio_notes = check_audio(sample["audio"], self.sample_rate, self.audio_limit(spec))
            notes += audio_notes
            if text:
                notes.append(f"task {tag} takes speech: the text was not used")
        else:
            if text is None or not str(text).strip():
                raise ChatInputError("empty_text", f"task {tag} takes text: give a non-empty text")
            # a text-in task reads its text as the user prompt (text chat) or as the text to speak (TTS)
            if spec.uses_prompt:
                sample["extra"]["question"] = str(text).strip()
            else:
                sample["txt"] = str(text).strip()
            if wav is not None:
                notes.append(f"task {tag} takes text: the audio was not used")
        if prompt is not None and str(prompt).strip():
            if spec.uses_prompt and spec.speech_input:
                sample["extra"]["question"] = str(prompt).strip()
            else:
                notes.append(f"task {tag} reads no user prompt: the prompt was not used")
        if history:
            if spec.embeds_history:
                sample["history"] = [{"audio": t.user_audio, "txt": t.text} for t in history]
                for i, t in enumerate(history, 1):
                    if t.speech_tokens:
                        sample["extra"][f"speech_token_{i}"] = list(t.speech_tokens)
            else:
                notes.append(f"task {tag} was not trained with history: the {len(history)} earlier turn(s) "
                             "were not used")
        return sample, spec, notes

    def audio_limit(self, spec) -> float:
        """Longest user audio in seconds for this task."""
        if self.max_audio_seconds:
            return self.max_audio_seconds
        overrides = self.decode_options["overrides"]
        return overrides.get("max_audio_frames", spec.decode.max_audio_frames) / self.frames_per_second

    def batch(self, sample) -> Batch:
        """The padded Batch of one request, through the data pipeline."""
        with self._batch_lock:  # the counter keeps the reason of the last request dropped
            self.counter.last = None
            items = list(self.dataset.process(iter([sample])))
            dropped = self.counter.last
        if not items:
            reason, detail = dropped or ("rejected", "the data pipeline dropped the request")
            raise ChatInputError(reason, detail)
        return Batch.from_samples(items)

    def run(self, task: str, wav=None, text: Optional[str] = None, prompt: Optional[str] = None,
            history: Optional[list] = None, key: str = "request", **decode_overrides) -> Result:
        """Decode one request. `history`: earlier `Turn`s (speech-in/speech-out tasks embed them);
        `key` seeds sampling (with the decode seed); `decode_overrides`: DecodeConfig fields
        (max_text_tokens, do_sample, temperature, ...) and `greedy`."""
        start = time.perf_counter()
        sample, spec, notes = self.sample(task, wav, text, prompt, history, key)
        batch = self.batch(sample).to(self.model.device)
        timings = {"encoder": 0.0}
        with _timed(self.model.encoder, timings, "encoder"), torch.no_grad():
            t0 = time.perf_counter()
            hyp = self._decoder(decode_overrides).decode(batch)[0]
            timings["llm"] = time.perf_counter() - t0 - timings["encoder"]
        error = getattr(hyp, "error", None)
        if error:
            reason, _, message = error.partition(": ")
            raise ChatInputError(reason, message or error)
        for flag, what in (("hit_max_text_tokens", "max_text_tokens"), ("hit_max_speech_tokens", "max_speech_tokens")):
            if getattr(hyp, flag, False):
                notes.append(f"stopped at {what}: the answer may be cut")
        result = Result(task=batch.task[0], output_type=hyp.output_type, text=hyp.text, think=hyp.think,
                        speech_tokens=list(hyp.speech_tokens), notes=notes, timings=timings,
                        history_turns=len(batch.history[0]))
        self._synthesize(result, start)
        result.timings["total"] = time.perf_counter() - start
        return result

    @property
    def scheduler(self):
        """The decode loop every `stream` of this pipeline shares (generation/scheduler.py), made on first use."""
        with self._scheduler_lock:
            if self._scheduler is None:
                from osum_echat.generation.scheduler import Scheduler
                self._scheduler = Scheduler(self.model, self.decode_options.get("packed_weights", "auto"))
            return self._scheduler

    def close(self) -> None:
        """Stop the decode loop `stream` started, if any (a loop thread still running torch when the
        interpreter exits aborts the process)."""
        with self._scheduler_lock:
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.close()
        if self.voice_worker is not None:
            self.voice_worker.close()

    @property
    def voice_batcher(self):
        """Streamed token2wav windows of concurrent streams solved together (token2wav/batching.py)."""
        with self._scheduler_lock:
            if self._voice_batcher is None and self.token2wav is not None:
                from osum_echat.token2wav.batching import SolveBatcher
                self._voice_batcher = SolveBatcher(self.token2wav)
            return self._voice_batcher

    def open_voice(self, prompt, events, cancel):
        """token2wav of one streamed utterance (token2wav/voice.py): in the voice worker process when
        one is set, else in a thread of this process."""
        if self.voice_worker is not None:
            return self.voice_worker.open(prompt, events, cancel)
        from osum_echat.token2wav.voice import LocalVoice
        return LocalVoice(self.token2wav, prompt, events, cancel, self.voice_batcher)

    def stream(self, task: str, wav=None, text: Optional[str] = None, prompt: Optional[str] = None,
               history: Optional[list] = None, key: str = "request", cancel=None, speaker_prompt=None,
               **decode_overrides):
        """Decode one request as `run` does, as a generator of `StreamEvent`s: think/text deltas and
        speech tokens as they are decoded, audio packets while the LLM keeps decoding, then "done"
        with the Result. `cancel`: a threading.Event that stops it early (see infer/streaming.py);
        `speaker_prompt`: token2wav prompt of this request (default: the pipeline's). Safe to
        consume from any thread; concurrent streams are decoded as one batch."""
        from osum_echat.infer.streaming import stream_request
        return stream_request(self, task, wav, text, prompt, history, key, cancel, speaker_prompt,
                              **decode_overrides)

    def _decoder(self, overrides: dict) -> Decoder:
        options = dict(self.decode_options)
        options["greedy"] = overrides.pop("greedy", options["greedy"])
        options["overrides"] = {**options["overrides"], **overrides}
        try:
            return Decoder(self.model, **options)
        except ValueError as e:  # an unknown override name or prompt style
            raise ChatInputError("bad_decode_option", str(e)) from None

    def _synthesize(self, result: Result, start: float) -> None:
        if self.token2wav is None or not result.speech_tokens:
            return
        t0 = time.perf_counter()
        chunks = []
        for chunk in self.token2wav.stream(iter(result.speech_tokens), prompt=self.speaker_prompt):  # first audio early
            if not chunks:
                result.timings["first_audio"] = time.perf_counter() - start
            chunks.append(chunk.float().cpu())
        result.timings["token2wav"] = time.perf_counter() - t0
        result.audio = torch.cat(chunks) if chunks else torch.zeros(0)
        result.sample_rate = self.token2wav.sample_rate

    # -------------------------------------------------------------- helpers
    def transcribe(self, wav, **kw) -> Result:
        return self.run(HELPER_TASKS["transcribe"], wav=wav, **kw)

    def understand(self, wav, tag: str = "<EMOTION>", prompt: Optional[str] = None, **kw) -> Result:
        """Any understanding tag of the table (<EMOTION>, <AGE> <GENDER>, <CAPTION> ...)."""
        return self.run(tag, wav=wav, prompt=prompt, **kw)

    def chat(self, wav, **kw) -> Result:
        return self.run(HELPER_TASKS["chat"], wav=wav, **kw)

    def chat_think(self, wav, **kw) -> Result:
        return self.run(HELPER_TASKS["chat_think"], wav=wav, **kw)

    def tts(self, text: str, **kw) -> Result:
        return self.run(HELPER_TASKS["tts"], text=text, **kw)

    def s2s(self, wav, history=None, **kw) -> Result:
        return self.run(HELPER_TASKS["s2s"], wav=wav, history=history, **kw)

    def s2s_think(self, wav, history=None, **kw) -> Result:
        return self.run(HELPER_TASKS["s2s_think"], wav=wav, history=history, **kw)

    def t2t(self, text: str, **kw) -> Result:
        return self.run(HELPER_TASKS["t2t"], text=text, **kw)

