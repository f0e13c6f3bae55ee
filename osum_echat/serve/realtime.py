"""WS /v1/realtime: authentication, the session limit, and the read/send loops of one client.

Each client has its own bounded send queue drained by its own sender task: the engine and other
sessions never wait for a client. A client whose queue stays full (it does not read) is closed
(1008); an extra session past --max_sessions gets an error event and close 1013; no message for
--idle_timeout_s, or a session older than --max_session_s, ends with an error event and close 1000.
Messages larger than --max_message_bytes are refused by the WebSocket layer (close 1009).
"""
from __future__ import annotations

import asyncio
import json
import time

from starlette.websockets import WebSocket, WebSocketDisconnect

from osum_echat.serve import protocol as P
from osum_echat.serve.auth import KEY_SUBPROTOCOL, key_matches, websocket_key
from osum_echat.serve.session import RealtimeSession
from osum_echat.utils import get_logger

log = get_logger("osum_echat.serve")

CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TRY_AGAIN = 1000, 1008, 1013
SEND_TIMEOUT_S = 10.0  # an audio delta may wait this long for room in the send queue
FLUSH_TIMEOUT_S = 2.0


def offered_subprotocols(ws: WebSocket) -> list:
    return [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


class Outbox:
    """The bounded send queue of one client and its sender task."""

    def __init__(self, ws: WebSocket, size: int, on_slow):
        self.ws, self.on_slow = ws, on_slow
        self.queue: asyncio.Queue = asyncio.Queue(size)
        self.closing = False
        self.task = asyncio.create_task(self._send())

    def emit(self, event: dict) -> None:
        if self.closing:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.on_slow()

    async def emit_wait(self, event: dict) -> None:
        if self.closing:
            return
        try:
            await asyncio.wait_for(self.queue.put(event), SEND_TIMEOUT_S)
        except asyncio.TimeoutError:
            self.on_slow()

    async def _send(self) -> None:
        while True:
            event = await self.queue.get()
            await self.ws.send_text(json.dumps(event, ensure_ascii=False))

    async def flush(self) -> None:
        try:
            await asyncio.wait_for(self._drained(), FLUSH_TIMEOUT_S)
        except asyncio.TimeoutError:
            pass

    async def _drained(self) -> None:
        while not self.queue.empty() and not self.task.done():
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        self.closing = True
        if self.task.done() and not self.task.cancelled():
            self.task.exception()  # the client went away mid-send: expected, not worth a traceback
        self.task.cancel()


async def _refuse(ws: WebSocket, code: str, message: str, close_code: int) -> None:
    await ws.send_text(json.dumps(P.error(code, message)))
    await ws.close(code=close_code, reason=code)


async def serve_realtime(app, ws: WebSocket) -> None:
    settings, engine, metrics = app.state.settings, app.state.engine, app.state.metrics
    offered = offered_subprotocols(ws)
    chosen = "realtime" if "realtime" in offered else (offered[0] if offered else None)
    await ws.accept(subprotocol=chosen)
    if not key_matches(settings.api_key, websocket_key(ws.headers, offered)):
        metrics.errors.labels("invalid_api_key").inc()
        return await _refuse(ws, "invalid_api_key", "missing or wrong API key: send 'Authorization: Bearer KEY' "
                             f"or the subprotocol '{KEY_SUBPROTOCOL}KEY'", CLOSE_POLICY)
    if len(app.state.sessions) >= settings.max_sessions:
        metrics.errors.labels("session_limit_reached").inc()
        return await _refuse(ws, "session_limit_reached", f"the server holds its maximum of {settings.max_sessions} "
                             "sessions (--max_sessions): try again later", CLOSE_TRY_AGAIN)

    slow = asyncio.Event()
    outbox = Outbox(ws, settings.send_queue, slow.set)
    session = RealtimeSession(engine, settings, outbox.emit, outbox.emit_wait, app.state.vad_model, metrics,
                              ws.query_params.get("model") or settings.model_name)
    app.state.sessions.add(session)
    metrics.sessions.inc()
    metrics.sessions_total.inc()
    outbox.emit(P.session_created(session.session_object()))
    deadline = time.monotonic() + settings.max_session_s
    close_code, close_reason = CLOSE_NORMAL, ""
    slow_wait = asyncio.create_task(slow.wait())
    try:
        while True:
            left = deadline - time.monotonic()
            timeout = min(settings.idle_timeout_s, left)
            receive = asyncio.create_task(ws.receive())
            done, _ = await asyncio.wait({receive, slow_wait, outbox.task}, timeout=max(timeout, 0),
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done and session.responder.active and time.monotonic() < deadline:
                receive.cancel()  # idle only counts while no response is running
                continue
            if receive not in done:
                receive.cancel()
                if slow_wait in done:
                    metrics.errors.labels("slow_client").inc()
                    close_code, close_reason = CLOSE_POLICY, "client too slow: its send queue stayed full"
                elif outbox.task in done:  # the client went away while we were sending
                    close_code, close_reason = None, ""
                else:
                    code = "session_expired" if timeout >= left else "idle_timeout"
                    message = (f"the session reached its maximum length of {settings.max_session_s:g} s"
                               if code == "session_expired" else
                               f"no client event for {settings.idle_timeout_s:g} s: session closed")
                    session.error(code, message)
                    close_reason = code
                break
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                close_code = None
                break
            if message.get("text") is not None:
                await session.handle(message["text"])
            else:
                session.error("binary_not_supported", "send events as JSON text messages")
    except WebSocketDisconnect:
        close_code = None
    finally:
        slow_wait.cancel()
        await session.close()
        app.state.sessions.discard(session)
        metrics.sessions.dec()
        if close_code is not None and close_code != CLOSE_POLICY:
            await outbox.flush()
        outbox.stop()
        if close_code is not None:
            try:
                await asyncio.wait_for(ws.close(code=close_code, reason=close_reason), FLUSH_TIMEOUT_S)
            except (asyncio.TimeoutError, RuntimeError, OSError):
                pass
