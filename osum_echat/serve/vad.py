"""Silero VAD, offline: the ONNX file the `silero-vad` wheel ships, run by onnxruntime (nothing is downloaded).

    model = SileroModel.load()              # once per server; thread-safe
    vad = StreamingVad(model, threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500)
    for ev in vad.push(samples_16k):        # float32 16 kHz, any chunk size
        ev  # ("start", start_sample) | ("stop", end_sample), samples counted from the stream's start

OpenAI's server_vad semantics: speech starts when a 32 ms window's probability reaches `threshold`
(and continues while it stays above threshold - 0.15, Silero's own hysteresis); it stops after
`silence_duration_ms` below that; the committed segment starts `prefix_padding_ms` before the start.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np

RATE = 16000
WINDOW = 512  # samples a Silero step at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window the model sees before each window
HYSTERESIS = 0.15  # speech continues above threshold - 0.15 (silero_vad.get_speech_timestamps)
ONNX_FILE = "silero_vad.onnx"


def packaged_model_path() -> Path:
    """The ONNX file inside the installed silero-vad wheel."""
    path = Path(str(resources.files("silero_vad.data").joinpath(ONNX_FILE)))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall the pinned silero-vad wheel (requirements.txt)")
    return path


class SileroModel:
    """One onnxruntime session shared by all streams (each keeps its own recurrent state)."""

    def __init__(self, path: Optional[Path] = None):
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = opts.intra_op_num_threads = 1
        self.path = Path(path or packaged_model_path())
        self.session = onnxruntime.InferenceSession(str(self.path), sess_options=opts,
                                                    providers=["CPUExecutionProvider"])

    load = classmethod(lambda cls, path=None: cls(path))

    def step(self, window: np.ndarray, state: np.ndarray):
        """(speech probability, new state) of one CONTEXT + WINDOW sample array."""
        out, state = self.session.run(None, {"input": window[None, :].astype(np.float32), "state": state,
                                             "sr": np.array(RATE, dtype=np.int64)})
        return float(out[0, 0]), state


class StreamingVad:
    def __init__(self, model: SileroModel, threshold: float = 0.5, prefix_padding_ms: int = 300,
                 silence_duration_ms: int = 500):
        self.model = model
        self.threshold = threshold
        self.prefix = prefix_padding_ms * RATE // 1000
        self.silence = silence_duration_ms * RATE // 1000
        self.state = np.zeros((2, 1, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT, dtype=np.float32)
        self.pending = np.zeros(0, dtype=np.float32)
        self.position = 0  # samples consumed by full windows
        self.speaking = False
        self.speech_start = 0
        self.last_speech = 0  # end of the last window above the lower threshold

    def push(self, samples: np.ndarray) -> list:
        events = []
        self.pending = np.concatenate([self.pending, np.asarray(samples, dtype=np.float32)])
        while len(self.pending) >= WINDOW:
            window, self.pending = self.pending[:WINDOW], self.pending[WINDOW:]
            prob, self.state = self.model.step(np.concatenate([self.context, window]), self.state)
            self.context = window[-CONTEXT:]
            start, self.position = self.position, self.position + WINDOW
            if not self.speaking and prob >= self.threshold:
                self.speaking, self.speech_start, self.last_speech = True, start, self.position
                events.append(("start", start))
            elif self.speaking:
                if prob >= self.threshold - HYSTERESIS:
                    self.last_speech = self.position
                elif self.position - self.last_speech >= self.silence:
                    self.speaking = False
                    events.append(("stop", self.last_speech))
        return events

    def segment_start(self, start: int) -> int:
        """Where a committed segment begins: prefix_padding_ms before the detected start."""
        return max(0, start - self.prefix)
