"""The FastAPI app: WS /v1/realtime, OpenAI-compatible REST, /healthz, /metrics and the browser page.

    app = create_app(Engine(pipe), ServeSettings(api_key="k"))

The model is loaded before the app exists, so /healthz answers only once it is loaded. With an API
key every /v1 route and /metrics need it: `Authorization: Bearer KEY`, or on the WebSocket the
`openai-insecure-api-key.KEY` subprotocol browsers send (the page, the SDK in a browser).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from osum_echat.serve import rest
from osum_echat.serve.auth import bearer, key_matches
from osum_echat.serve.engine import Engine
from osum_echat.serve.metrics import Metrics
from osum_echat.serve.realtime import serve_realtime
from osum_echat.serve.rest import ApiError
from osum_echat.serve.vad import SileroModel

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # OpenAI's transcription upload limit


@dataclasses.dataclass
class ServeSettings:
    model_name: str = "osum-echat"
    api_key: Optional[str] = None
    task: str = "<S2TCHAT> <TEXT2TOKEN>"  # a realtime session's task until session.update says otherwise
    max_sessions: int = 4
    max_message_bytes: int = 1 << 20  # one client WebSocket message
    max_turn_audio_s: float = 30.0  # input audio buffer of one turn
    idle_timeout_s: float = 300.0  # no client message for this long closes the session
    max_session_s: float = 3600.0
    send_queue: int = 256  # server events waiting for a slow client; past that it is closed
    turn_timeout_s: float = 600.0


def create_app(engine: Engine, settings: ServeSettings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        await asyncio.to_thread(engine.pipe.close)  # stop the decode loop before the interpreter exits

    app = FastAPI(title="OSUM-EChat server", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.engine, app.state.settings = engine, settings
    app.state.metrics = metrics = Metrics()
    metrics.watch_decoder(engine.pipe.scheduler)
    metrics.watch_voice(engine.pipe)
    app.state.sessions = set()
    app.state.vad_model = SileroModel.load()  # shared by every session's VAD

    def error_response(e: ApiError) -> JSONResponse:
        metrics.errors.labels(e.code).inc()
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(ApiError)
    async def _api_error(_request, e: ApiError):
        return error_response(e)

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        path = request.url.path
        if (path.startswith("/v1/") or path == "/metrics") and not key_matches(
                settings.api_key, bearer(request.headers.get("authorization"))):
            return error_response(ApiError(401, "invalid_api_key", "missing or wrong API key: send "
                                           "'Authorization: Bearer KEY' (the server's --api_key)", None,
                                           "authentication_error"))
        return await call_next(request)

    async def json_body(request: Request) -> dict:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_json", "the request body must be a JSON object")
        return body

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "model": settings.model_name, "audio_output": engine.audio_on,
                "sessions": len(app.state.sessions), "max_sessions": settings.max_sessions}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/")
    async def page():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")  # the page's script and worklet

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0,
                                            "owned_by": "osum-echat"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await json_body(request)
        model = str(body.get("model") or settings.model_name)
        if body.get("stream"):
            rest.chat_request(body)  # bad input -> a 400 before the stream starts
            rest.decode_overrides(body)
            metrics.turns.labels("chat.completions", "streamed").inc()
            return StreamingResponse(rest.chat_completion_chunks(engine, body, model),
                                     media_type="text/event-stream")
        out = await asyncio.to_thread(rest.chat_completion, engine, body, model)
        metrics.turns.labels("chat.completions", "completed").inc()
        return out

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        form = await request.form(max_part_size=MAX_UPLOAD_BYTES)
        upload = form.get("file")
        if upload is None or not hasattr(upload, "read"):
            raise ApiError(400, "missing_file", "send the audio as the multipart field 'file'", "file")
        audio = await upload.read()
        out = await asyncio.to_thread(rest.transcription, engine, audio, str(form.get("response_format") or "json"))
        metrics.turns.labels("audio.transcriptions", "completed").inc()
        return PlainTextResponse(out) if isinstance(out, str) else out

    @app.post("/v1/audio/speech")
    async def speech(request: Request):
        body = await json_body(request)
        audio, media_type = await asyncio.to_thread(rest.speech, engine, body)
        metrics.turns.labels("audio.speech", "completed").inc()
        return Response(audio, media_type=media_type)

    @app.websocket("/v1/realtime")
    async def realtime(ws: WebSocket):
        await serve_realtime(app, ws)

    return app
