"""Prometheus metrics of one server (own registry: two apps in one process do not collide)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# end of user speech -> first audio delta, seconds
FIRST_AUDIO_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.sessions = Gauge("osum_realtime_sessions_open", "open realtime sessions", registry=self.registry)
        self.sessions_total = Counter("osum_realtime_sessions_opened", "realtime sessions opened",
                                      registry=self.registry)
        self.turns = Counter("osum_turns", "answered turns by endpoint and final status", ["endpoint", "status"],
                             registry=self.registry)
        self.errors = Counter("osum_errors", "errors sent to clients by code", ["code"], registry=self.registry)
        self.first_audio = Histogram("osum_end_of_speech_to_first_audio_seconds",
                                     "end of user speech (commit) -> first audio delta sent",
                                     buckets=FIRST_AUDIO_BUCKETS, registry=self.registry)
        self.first_text = Histogram("osum_end_of_speech_to_first_text_seconds",
                                    "end of user speech (commit) -> first text delta sent",
                                    buckets=FIRST_AUDIO_BUCKETS, registry=self.registry)

    def watch_decoder(self, scheduler) -> None:
        """The shared decode loop's own counters (generation/scheduler.py), read at each scrape:
        ids decoded / seconds busy is the decoder's aggregate rate over all sessions."""
        Gauge("osum_decode_tokens", "ids decoded by the shared decode loop, all sessions",
              registry=self.registry).set_function(lambda: scheduler.tokens_out)
        Gauge("osum_decode_busy_seconds", "seconds the shared decode loop spent prefilling and stepping",
              registry=self.registry).set_function(lambda: scheduler.busy_seconds)
        Gauge("osum_decode_prefill_seconds", "of the busy seconds, those spent prefilling prompts",
              registry=self.registry).set_function(lambda: scheduler.prefill_seconds)
        Gauge("osum_decode_prefill_positions", "prompt positions prefilled",
              registry=self.registry).set_function(lambda: scheduler.prefill_positions)
        Gauge("osum_decode_steps", "decode steps run (one id for every row of the batch)",
              registry=self.registry).set_function(lambda: scheduler.steps)

    def watch_voice(self, pipe) -> None:
        """token2wav's batched ODE solves (token2wav/batching.py): windows per solve is the mean batch."""
        def counts():
            worker = pipe.voice_worker
            if worker is not None:
                return worker.solves, worker.solve_rows
            batcher = pipe._voice_batcher
            return (batcher.solves, batcher.rows) if batcher is not None else (0, 0)

        Gauge("osum_token2wav_solves", "token2wav flow ODE solves run (each solves one or more aligned windows)",
              registry=self.registry).set_function(lambda: counts()[0])
        Gauge("osum_token2wav_solved_windows", "token2wav windows solved, all solves together",
              registry=self.registry).set_function(lambda: counts()[1])

    def text(self) -> bytes:
        return generate_latest(self.registry)
