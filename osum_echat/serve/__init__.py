"""The live side: an OpenAI-compatible server (Realtime WebSocket + REST) over one loaded model.

    python -m osum_echat.bin.serve --checkpoint exp/demo/stage2/final.pt --token2wav_dir exp/demo/token2wav_tiny

app.py (routes), rest.py (REST bodies), protocol.py (Realtime event shapes), session.py (one
conversation per WebSocket), vad.py (Silero VAD, offline), engine.py (the pipeline seen as event streams).
"""
