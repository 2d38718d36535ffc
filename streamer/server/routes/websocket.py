"""``WS /v1/sessions/{id}/ws``: the driver API (docs/api.md).

PCM in binary messages, JSON control messages in text ones (streamer/server/messages.py);
server events go out through a bounded outbox, so a client that reads nothing is cut off
(1008) instead of holding memory, and the session goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from vivify.engines.audio.audio_io import pcm16_to_float
from vivify.streamer.server.manager import SessionManager
from vivify.streamer.server.messages import ClientMessage, parse_client_message

MAX_WS_BINARY = 64 * 1024  # bytes per PCM message (2 s of 16 kHz s16)
MAX_OUTBOX = 256  # server events queued for one WebSocket; a client that reads none is cut off
WS_NORMAL, WS_SLOW_CLIENT, WS_SHUTDOWN = 1000, 1008, 1012
WS_UNKNOWN_SESSION = 4404
Send = Callable[[dict[str, Any]], None]


def router(manager: SessionManager) -> APIRouter:
    api = APIRouter()

    @api.websocket("/v1/sessions/{session_id}/ws")
    async def session_ws(ws: WebSocket, session_id: str) -> None:
        """The driver API (docs/api.md). Origin and token were checked by the guard (close
        4403/4401); an unknown session closes with 4404. When the session ends its
        ``session_closed`` event is sent, then the close frame: 1012 if the server is shutting
        down, 1000 otherwise."""
        await ws.accept()
        session = manager.sessions.get(session_id)
        if session is None:
            await ws.close(code=WS_UNKNOWN_SESSION, reason=f"no session {session_id[:64]}")
            return
        outbox: deque[dict[str, Any]] = deque()
        wake = asyncio.Event()
        overflow = False

        def send(event: dict[str, Any]) -> None:
            nonlocal overflow
            if len(outbox) >= MAX_OUTBOX:
                overflow = True  # the client reads nothing: cut it off, the session goes on
            else:
                outbox.append(event)
            wake.set()

        async def pump() -> None:
            while True:
                await wake.wait()
                wake.clear()
                if overflow:
                    await ws.close(code=WS_SLOW_CLIENT, reason="events not read: outbox full")
                    return
                while outbox:
                    event = outbox.popleft()
                    await ws.send_text(json.dumps(event))
                    if event.get("code") == "session_closed":
                        await ws.close(code=WS_SHUTDOWN if manager.shutting_down else WS_NORMAL,
                                       reason=str(event.get("message", ""))[:100])
                        return

        session.sockets.add(send)
        pump_task = asyncio.create_task(pump())
        reader = asyncio.create_task(_read_messages(ws, session, send))
        try:
            await asyncio.wait({pump_task, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            session.sockets.discard(send)
            for task in (pump_task, reader):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    return api


async def _read_messages(ws: WebSocket, session: Any, send: Send) -> None:
    """Apply the client's messages until it leaves or the session ends."""
    with contextlib.suppress(WebSocketDisconnect):
        async for message in _messages(ws):
            session.touch()
            handle_message(session, message, send)
            if session.closed:
                return


async def _messages(ws: WebSocket) -> AsyncIterator[bytes | str]:
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
        if msg.get("bytes") is not None:
            yield msg["bytes"]
        elif msg.get("text") is not None:
            yield msg["text"]


def handle_message(session: Any, message: bytes | str, send: Send) -> None:
    """Apply one WebSocket message; bad ones get an ``error`` event, never a crash."""
    if isinstance(message, bytes):
        if len(message) % 2 or len(message) > MAX_WS_BINARY:
            send({"type": "error", "code": "bad_audio",
                  "message": f"binary messages are PCM s16le mono 16 kHz, an even number of "
                             f"bytes up to {MAX_WS_BINARY}; got {len(message)}"})
            return
        try:
            session.media.push_audio(pcm16_to_float(message))
        except OverflowError as exc:
            send({"type": "error", "code": "buffer_full", "message": str(exc)})
        return
    try:
        parsed: ClientMessage = parse_client_message(message)
    except ValueError as exc:  # pydantic's ValidationError is one too
        send({"type": "error", "code": "bad_message", "message": str(exc)[:300]})
        return
    if parsed.type == "interrupt":
        session.media.interrupt()
    elif parsed.type == "segment_end":
        session.media.segment_end()
    elif parsed.type == "controls":
        c = session.media.controls
        if parsed.emotion is not None:
            c.emotion = parsed.emotion
        if parsed.intensity is not None:
            c.intensity = parsed.intensity
        if parsed.gaze is not None:
            c.gaze = (parsed.gaze[0], parsed.gaze[1])
        if parsed.distance is not None:
            c.distance = parsed.distance
    elif parsed.type == "stats":
        send({"type": "stats", **session.stats()})
