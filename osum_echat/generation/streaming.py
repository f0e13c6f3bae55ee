"""Which head scores a row next, and when it stops: the phase schedule of one decoded row.

  text         text head until the text eos
  speech       the span marker is fed first (upstream's TTS start), speech head until the
               marker closes the span
  text_speech  text head until the text eos, then speech head until the span closes, i.e.
               the second marker after the text eos (upstream's S2SStopCriteria)
  interleave   the streaming layout the streaming tasks were trained on: 6 text ids, 18 speech
               ids, 6 text, ... ; once the text eos is out, speech until the span closes

Caps: max_text_tokens / max_speech_tokens count the ids generated in each phase (eos and markers
included), max_total_tokens all generated ids (upstream's MaxTokenStopper). Generation may run past
max_position_embeddings as upstream's does (RoPE has no table); only the prompt must fit. A cap ends the row and sets the flag of the phase it hit,
except the text cap of a task that goes on to speech: its last text id is forced to be the eos
(`must_end_text`), so the answer is cut but still gets its speech.
"""
from __future__ import annotations

import dataclasses

from osum_echat.tasks import STREAM_SPEECH_CHUNK, STREAM_TEXT_CHUNK


@dataclasses.dataclass
class PhaseState:
    phases: str
    phase: str  # "text" | "speech" | "done"
    in_chunk: int = 0
    text_done: bool = False
    markers: int = 0
    n_text: int = 0
    n_speech: int = 0
    hit_max_text_tokens: bool = False
    hit_max_speech_tokens: bool = False

    @classmethod
    def start(cls, phases: str) -> "PhaseState":
        if phases == "speech":  # the fed marker opens the span
            return cls(phases, "speech", markers=1)
        return cls(phases, "text")

    @property
    def done(self) -> bool:
        return self.phase == "done"

    def must_end_text(self, conf) -> bool:
        """The next text id must be the eos: the text cap is reached and speech is still to come."""
        return self.phase == "text" and self.phases != "text" and self.n_text >= conf.max_text_tokens - 1

    def advance(self, token: int, *, eos: int, marker: int, conf) -> None:
        """Account for `token` (in the id space of the current phase) and pick the next phase."""
        if self.phase == "text":
            self.n_text += 1
            self.in_chunk += 1
            if token == eos:
                self.text_done = True
                self._switch("speech" if self.phases != "text" else "done")
            elif self.phases == "interleave" and self.in_chunk >= STREAM_TEXT_CHUNK:
                self._switch("speech")
        else:
            self.n_speech += 1
            self.in_chunk += 1
            self.markers += token == marker
            if self.markers >= 2:
                self._switch("done")
            elif self.phases == "interleave" and not self.text_done and self.in_chunk >= STREAM_SPEECH_CHUNK:
                self._switch("text")
        self._check_caps(conf)

    def _switch(self, phase: str) -> None:
        self.phase, self.in_chunk = phase, 0

    def _check_caps(self, conf) -> None:
        if self.done:
            return
        total = self.n_text + self.n_speech
        over_total = conf.max_total_tokens is not None and total >= conf.max_total_tokens
        text_cap = self.phases == "text" and self.n_text >= conf.max_text_tokens
        if self.phase == "text" and (text_cap or over_total):
            self.hit_max_text_tokens = True
            self._switch("done")
        elif self.phase == "speech" and (self.n_speech >= conf.max_speech_tokens or over_total):
            self.hit_max_speech_tokens = True
            self._switch("done")
