"""One request streamed: text as it is decoded, audio while the LLM keeps decoding.

    for ev in pipe.stream("<S2TCHAT> <TEXT2TOKEN>", wav="q.wav", cancel=stop):   # stop: threading.Event
        ev.kind  "think_delta" | "text_delta" (ev.text), "speech_tokens" (ev.tokens),
                 "audio" (ev.audio: 1-D float32 numpy at ev.sample_rate), "done" (ev.result: Result)

The request is checked and its prompt built as `ChatPipeline.run` does (same ChatInputError rules,
raised by the first `next()`), then decoded by the pipeline's shared `Scheduler` (continuous
batching with every other stream of the pipeline). Ids arrive as the decode loop produces them:
text ids are detokenised incrementally (a piece that is not yet whole UTF-8, a trailing space, or
what may be the start of a think marker is held back until the next id decides it), so the deltas
of each kind add up to the final `Result.text` / `Result.think`. Speech codes go to the pipeline's
voice at once (token2wav/voice.py: a thread, or the server's token2wav worker process; both run
`Token2Wav.stream`, the windowed streaming mode), which renders its first window
while the LLM goes on: after the text phase for text-then-speech tasks, after the first text and
speech chunk for the 6:18 interleaved ones.

Cancel (the `cancel` event set, or the generator closed): no event but "done" is yielded after it
is seen; the LLM row leaves the batch at its next step and token2wav stops after the window in
flight; "done" comes once both have stopped, with `Result.cancelled` and the parts that were
yielded (text, think, speech tokens, audio) - what a conversation keeps as history.
"""
from __future__ import annotations

import dataclasses
import queue
import threading
import time
from typing import Optional

import numpy as np
import torch

from osum_echat import tasks as task_table
from osum_echat.generation.decode import ItemError, select_item
from osum_echat.models.osum_echat import spec_for_output_type
from osum_echat.utils import get_logger

log = get_logger("osum_echat.streaming")

POLL_SECONDS = 0.02  # how often a waiting consumer looks at its cancel event
EVENT_KINDS = ("think_delta", "text_delta", "speech_tokens", "audio", "done")


@dataclasses.dataclass
class StreamEvent:
    kind: str  # one of EVENT_KINDS
    text: str = ""  # think_delta, text_delta
    tokens: tuple = ()  # speech_tokens: the new codes
    audio: Optional[np.ndarray] = None  # audio: 1-D float32 samples
    sample_rate: Optional[int] = None  # audio
    result: object = None  # done: the Result

    def to_dict(self) -> dict:
        """The event as a dict: {"type": kind, ...the fields of its kind}; audio as "samples", done
        with "cancelled"."""
        fields = {"think_delta": ("text",), "text_delta": ("text",), "speech_tokens": ("tokens",),
                  "audio": ("samples", "sample_rate"), "done": ("result", "cancelled")}[self.kind]
        values = {"text": self.text, "tokens": list(self.tokens), "samples": self.audio,
                  "sample_rate": self.sample_rate, "result": self.result,
                  "cancelled": bool(getattr(self.result, "cancelled", False))}
        return {"type": self.kind, **{f: values[f] for f in fields}}

    def __getitem__(self, name: str):  # ev["type"], ev["text"], ...: the dict view
        return self.to_dict()[name]

    def get(self, name: str, default=None):
        return self.to_dict().get(name, default)


class TextDeltas:
    """Detokenises text ids one at a time into (think delta, answer delta) pairs whose sums are
    what `split_think` makes of the whole decoded text."""

    def __init__(self, tokenizer, think_task: bool):
        self.tokenizer, self.think_task = tokenizer, think_task
        self.ids: list = []
        self.think, self.answer = "", ""  # emitted so far

    def push(self, token: int) -> tuple:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        return self._emit(*self._split(_stable(text)))

    def flush(self) -> tuple:
        """At the text eos: the text is whole, nothing is held back."""
        return self._emit(*self._split(self.tokenizer.decode(self.ids, skip_special_tokens=True)))

    def finish(self, think: str, answer: str) -> tuple:
        """The rest of the final (think, answer); logs if an emitted delta turned out wrong."""
        if self.unclosed_think(think, answer):  # already streamed as think: not sent again as answer
            return self._emit(self.think + answer[len(task_table.THINK_OPEN) + len(self.think):], "")
        if not think.startswith(self.think) or not answer.startswith(self.answer):
            log.warning("streamed text and final text differ (think %r vs %r, answer %r vs %r)",
                        self.think, think, self.answer, answer)
        return self._emit(think, answer)

    def unclosed_think(self, think: str, answer: str) -> bool:
        """A think task whose chain never closed (no THINK_CLOSE): split_think, like upstream, calls
        the whole text the answer, "<think>" included; the stream has sent it as think."""
        return ((self.think_task or bool(self.think)) and not think and not self.answer
                and answer.startswith(task_table.THINK_OPEN + self.think))

    def _split(self, text: str) -> tuple:
        open_, close = task_table.THINK_OPEN, task_table.THINK_CLOSE
        if close in text:
            head, answer = text.split(close, 1)
            return head.replace(open_, "", 1), answer
        if self.think_task or text.startswith(open_):
            return text.replace(open_, "", 1), ""
        return "", text

    def _emit(self, think: str, answer: str) -> tuple:
        dt = think[len(self.think):] if think.startswith(self.think) else ""
        da = answer[len(self.answer):] if answer.startswith(self.answer) else ""
        self.think += dt
        self.answer += da
        return dt, da


def _stable(text: str) -> str:
    """The part of a partial decode later ids cannot change: without an unfinished UTF-8 piece,
    trailing white space (a tokenizer may join it to what follows) or a possible marker start."""
    text = text.rstrip("\ufffd")
    text = text.rstrip()
    for marker in (task_table.THINK_OPEN, task_table.THINK_CLOSE):
        for n in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:n]):
                return text[:-n]
    return text


def stream_request(pipe, task: str, wav=None, text: Optional[str] = None, prompt: Optional[str] = None,
                   history: Optional[list] = None, key: str = "request", cancel: Optional[threading.Event] = None,
                   speaker_prompt=None, **decode_overrides):
    """The generator behind `ChatPipeline.stream` (see the module docstring)."""
    from osum_echat.infer.runtime import ChatInputError, Result, _timed

    start = time.perf_counter()
    cancel = cancel if cancel is not None else threading.Event()
    sample, _, notes = pipe.sample(task, wav, text, prompt, history, key)
    batch = pipe.batch(sample).to(pipe.model.device)
    dec = pipe._decoder(dict(decode_overrides))
    spec = spec_for_output_type(batch.output_type)
    conf = dec.config_for(spec)
    timings = {"encoder": 0.0}
    with _timed(pipe.model.encoder, timings, "encoder"), torch.no_grad():
        try:
            embeds = dec.prompt(select_item(batch, 0), spec, conf)
        except ItemError as e:
            raise ChatInputError(e.reason, e.message) from None
        except Exception as e:  # noqa: BLE001 - as run() reports a prompt that cannot be built
            raise ChatInputError("decode_error", f"{type(e).__name__}: {e}") from None

    prompt_len = int(embeds.shape[0])
    events: queue.Queue = queue.Queue()
    t_submit = time.perf_counter()
    ticket = pipe.scheduler.submit(key, spec, conf, embeds, lambda kind, value: events.put((kind, value)), cancel)
    voice = None
    if pipe.token2wav is not None and spec.speech_output:
        voice = pipe.open_voice(speaker_prompt if speaker_prompt is not None else pipe.speaker_prompt, events, cancel)
    vocab = pipe.scheduler.vocab
    deltas = TextDeltas(pipe.tokenizer, spec.think)
    sent_codes, sent_audio = [], []
    hyp, finished, voice_ended, text_ids = None, False, False, 0

    def mark(name):
        timings.setdefault(name, time.perf_counter() - start)

    def text_events(think_delta, answer_delta):
        if think_delta:
            mark("first_think")
            yield StreamEvent("think_delta", text=think_delta)
        if answer_delta:
            mark("first_text")
            yield StreamEvent("text_delta", text=answer_delta)

    try:
        while not cancel.is_set() and (hyp is None or (voice is not None and voice.started
                                                        and not voice_ended)):
            try:
                kind, value = events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if not ticket.done.is_set() and not pipe.scheduler.running and events.empty():
                    raise ChatInputError("decode_error", "the decode loop has stopped") from None
                continue
            if kind == "token":
                phase, token = value
                if phase == "text":
                    text_ids += token != vocab.eos
                    out = list(text_events(*(deltas.push(token) if token != vocab.eos else deltas.flush())))
                elif phase == "speech" and token != vocab.marker:
                    mark("first_speech_token")
                    if voice is not None:
                        voice.push(token)
                    sent_codes.append(token)
                    out = [StreamEvent("speech_tokens", tokens=(token,))]
                else:
                    out = []
            elif kind == "done":
                hyp = value
                timings["llm"] = time.perf_counter() - t_submit
                if voice is not None:
                    voice.finish()
                out = list(text_events(*deltas.finish(hyp.think, hyp.text)))
            elif kind == "audio":
                mark("first_audio")
                sent_audio.append(value)
                out = [StreamEvent("audio", audio=value, sample_rate=pipe.token2wav.sample_rate)]
            elif kind == "voice_end":
                voice_ended = True
                voice.join()
                if value:
                    notes.append(f"token2wav failed ({value}): the audio is cut")
                out = []
            else:  # "error": as run() reports a hypothesis with an error
                reason, _, message = str(value).partition(": ")
                raise ChatInputError(reason, message or str(value))
            for ev in out:
                if cancel.is_set():
                    break
                yield ev
        cancelled = cancel.is_set()
        if cancelled:
            _wait_stopped(ticket, voice, events)
        if hyp is not None and not cancelled and deltas.unclosed_think(hyp.think, hyp.text):
            answer, think, codes = deltas.answer, deltas.think, list(hyp.speech_tokens)
            notes.append(f"the think chain never closed ({task_table.THINK_CLOSE!r} missing): reported as "
                         "think with an empty answer (run() reports the whole text as the answer, as upstream does)")
        elif hyp is not None and not cancelled:
            answer, think, codes = hyp.text, hyp.think, list(hyp.speech_tokens)
        else:
            answer, think, codes = deltas.answer, deltas.think, list(sent_codes)
        if cancelled:
            notes.append("cancelled: the result holds the part that was streamed")
        for flag, what in (("hit_max_text_tokens", "max_text_tokens"), ("hit_max_speech_tokens", "max_speech_tokens")):
            if hyp is not None and getattr(hyp, flag, False):
                notes.append(f"stopped at {what}: the answer may be cut")
        result = Result(task=batch.task[0], output_type=spec.output_type, text=answer, think=think,
                        speech_tokens=codes, notes=notes, timings=timings, history_turns=len(batch.history[0]),
                        cancelled=cancelled, input_tokens=prompt_len, text_tokens=text_ids)
        if voice is not None and codes:
            result.audio = torch.from_numpy(np.concatenate(sent_audio)) if sent_audio else torch.zeros(0)
            result.sample_rate = pipe.token2wav.sample_rate
            timings["token2wav"] = voice.busy
            if voice.first_packet is not None:  # first code -> first packet, where token2wav runs
                timings["token2wav_first_packet"] = voice.first_packet
        timings["total"] = time.perf_counter() - start
        finished = True
        yield StreamEvent("done", result=result)
    finally:
        if not finished:  # closed early, or an error: stop the row and token2wav, do not wait for them
            cancel.set()
            ticket.cancel()
            if voice is not None:
                voice.stop()


def _wait_stopped(ticket, voice, events: queue.Queue, timeout: float = 60.0) -> None:
    """After a cancel: until the row has left the batch and token2wav has ended (events dropped)."""
    ticket.cancel()
    if voice is not None:
        voice.stop()
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if ticket.done.is_set() and (voice is None or not voice.running):
            break
        try:
            events.get(timeout=POLL_SECONDS)
        except queue.Empty:
            pass
