"""A multi-turn conversation: the model's own answers fed back as history.

    conv = Conversation(pipe, "<S2TCHAT> <TEXT2TOKEN>", max_turns=5)
    r1 = conv.say(wav="q1.wav")
    r2 = conv.say(wav="q2.wav")      # the model sees turn 1: q1 audio, its answer text and speech tokens
    for ev in conv.say_stream(wav="q3.wav", cancel=stop): ...   # streamed (ChatPipeline.stream)
    conv.truncate(1.2)               # the user heard 1.2 s of the last answer: keep only that
    conv.reset()

History uses the layout the model was trained on (models/osum_echat.py `_history_segment`, fed by
the data pipeline's history turns): for every earlier turn the user's speech, then the assistant's
text and speech tokens, each turn closed like a chat-template turn. Only speech-in/speech-out rows
(`TaskSpec.embeds_history`) were trained with history; for other tasks the turns are kept but not
shown to the model, and the result says so.

Upstream's infer_multiturn.py departs from its own training layout (no user start before the first
speech after the system prompt, no end-of-turn after an answer, the speech bos added twice) and
keeps 5 turns; here the trained layout is used and the same 5-turn default kept.

Bounds: at most `max_turns` earlier turns, and an estimated prompt of at most `max_context_tokens`
LLM positions; the oldest turns go first and `Result.notes` says how many were dropped and why.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from osum_echat import tasks as task_table
from osum_echat.infer.runtime import ChatPipeline, Result, Turn, audio_source, check_audio

DEFAULT_MAX_TURNS = 5  # upstream infer_multiturn.py keeps 5 turns


class Conversation:
    def __init__(self, pipe: ChatPipeline, task: str = "<S2TCHAT> <TEXT2TOKEN>", *,
                 max_turns: int = DEFAULT_MAX_TURNS, max_context_tokens: Optional[int] = None):
        self.pipe = pipe
        self.task = task
        self.max_turns = max_turns
        llm_positions = getattr(pipe.model.base_llm().config, "max_position_embeddings", 4096)
        self.max_context_tokens = max_context_tokens or llm_positions // 2
        self.turns: list[Turn] = []
        self._positions_per_second: Optional[float] = None

    def reset(self) -> None:
        self.turns = []

    def say_stream(self, wav=None, text: Optional[str] = None, prompt: Optional[str] = None,
                   task: Optional[str] = None, cancel=None, **decode_overrides):
        """One turn streamed (`ChatPipeline.stream` events); the turn is remembered when "done" is
        yielded - a cancelled one with the part that was streamed."""
        task = task or self.task
        source = audio_source(wav) if wav is not None else None
        seconds = 0.0
        if source is not None:
            seconds, _ = check_audio(source, self.pipe.sample_rate)
        history, dropped = self._bounded_history(seconds)
        for ev in self.pipe.stream(task, wav=source, text=text, prompt=prompt, history=history,
                                   key=f"turn{len(self.turns) + 1}", cancel=cancel, **decode_overrides):
            if ev.kind == "done":
                if dropped:
                    ev.result.notes.append(dropped)
                if source is not None:
                    self.turns.append(Turn(source, ev.result.text, list(ev.result.speech_tokens), seconds))
            yield ev

    def truncate(self, played_seconds: float) -> Optional[Turn]:
        """The user heard only `played_seconds` of the last answer (barge-in): keep the speech tokens
        whose audio was played and the same share of the answer text (an estimate: text and speech
        are not aligned). Returns the cut turn (None without turns)."""
        if not self.turns:
            return None
        turn = self.turns[-1]
        t2w = self.pipe.token2wav
        if t2w is None or not turn.speech_tokens:
            return turn
        played = max(0.0, played_seconds) * t2w.sample_rate
        n = 0
        while n < len(turn.speech_tokens) and t2w.num_samples(n) < played:
            n += 1
        if n < len(turn.speech_tokens):
            turn.text = turn.text[:round(len(turn.text) * n / len(turn.speech_tokens))]
            turn.speech_tokens = turn.speech_tokens[:n]
        return turn

    def say(self, wav=None, text: Optional[str] = None, prompt: Optional[str] = None,
            task: Optional[str] = None, **decode_overrides) -> Result:
        """One turn: decode with the kept history, then remember (user audio, answer)."""
        task = task or self.task
        source = audio_source(wav) if wav is not None else None
        seconds = 0.0
        if source is not None:
            seconds, _ = check_audio(source, self.pipe.sample_rate)  # the limit is the pipeline's check
        history, dropped = self._bounded_history(seconds)
        result = self.pipe.run(task, wav=source, text=text, prompt=prompt, history=history,
                               key=f"turn{len(self.turns) + 1}", **decode_overrides)
        if dropped:
            result.notes.append(dropped)
        if source is not None:
            self.turns.append(Turn(source, result.text, list(result.speech_tokens), seconds))
        return result

    # -------------------------------------------------------------- bounds
    def history_for(self, current_seconds: float):
        """(earlier turns the next request may see, a note on the turns dropped or "") for user audio
        of `current_seconds`; callers that run the request themselves append its Turn to `turns`."""
        return self._bounded_history(current_seconds)

    def _bounded_history(self, current_seconds: float):
        turns = self.turns[-self.max_turns:] if self.max_turns > 0 else []
        why = f"max_turns={self.max_turns}" if len(turns) < len(self.turns) else ""
        n_before = len(turns)
        while turns and self.estimate_positions(turns, current_seconds) > self.max_context_tokens:
            turns = turns[1:]
        if len(turns) < n_before:
            why = (why + ", " if why else "") + f"max_context_tokens={self.max_context_tokens}"
        dropped = len(self.turns) - len(turns)
        note = f"dropped the {dropped} oldest turn(s) from the history ({why})" if dropped else ""
        return turns, note

    def estimate_positions(self, turns: list, current_seconds: float) -> int:
        """LLM positions of the prompt (system, history turns, current speech, template), estimated
        from audio durations and token counts; the encoder's positions per second are measured once."""
        tok = self.pipe.tokenizer

        def n(text):
            return len(tok.encode(text, add_special_tokens=False))

        template = n(task_table.USER_START) + 2 * n(task_table.TURN_END) + n(task_table.ASSISTANT_START)
        total = 64 + self._speech_positions(current_seconds) + template  # 64: system prompt and user prompt
        for t in turns:
            total += self._speech_positions(t.seconds) + n(t.text) + len(t.speech_tokens) + 2 + template
        return total

    def _speech_positions(self, seconds: float) -> int:
        if self._positions_per_second is None:
            model = self.pipe.model
            frames = 1000  # 10 s of 10 ms log-mel frames
            dtype = next(model.encoder.parameters()).dtype
            feats = torch.zeros(1, frames, self.pipe.config.get("input_dim", 80), device=model.device, dtype=dtype)
            with torch.no_grad():
                _, mask = model.embed_speech(feats, torch.tensor([frames], device=model.device))
            self._positions_per_second = int(mask.sum()) / 10.0
        return math.ceil(seconds * self._positions_per_second) + 2  # + speech bos/eos
