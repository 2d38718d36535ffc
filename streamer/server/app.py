"""The HTTP/WebSocket API (FastAPI on uvicorn: OpenAPI docs for free, pydantic messages).

Routes are thin: they validate, call the avatar store or the session manager, and map errors to
``{"error": {"code", "message"}}``. See docs/api.md for the full contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import (
    FastAPI,
    File,
    Form,
    Request,
    UploadFile,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from vivify.engines.audio.audio_io import pcm16_to_float
from vivify.engines.audio.espeak import VoiceFailed, VoiceUnavailable, synthesize
from vivify.engines.errors import AvatarInputError
from vivify.streamer.server.avatars import CONSENT_STATEMENT, ConsentRecord
from vivify.streamer.server.errors import ApiError, TooLarge
from vivify.streamer.server.guard import BodyLimit, GuardConfig, RequestGuard
from vivify.streamer.server.memory import release_free_heap
from vivify.streamer.server.messages import ClientMessage, parse_client_message
from vivify.streamer.server.sessions import SessionManager, VideoOptions

log = logging.getLogger(__name__)
CLIENT_PACKAGE = "vivify.client_web"  # package data: served from wherever the package is installed
MAX_WS_BINARY = 64 * 1024  # bytes per PCM message (2 s of 16 kHz s16)
MAX_SPEAK_CHARS = 2000
MAX_VERIFY_BYTES = 200 * 2**20  # a few seconds of even a 4K clip; verify reads ≤ 6 s of it
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and form fields around an uploaded file
MAX_SESSION_BODY = 256 * 1024  # a session request: an SDP offer (≤ 200 000 characters) + a little
MAX_OUTBOX = 256  # server events queued for one WebSocket; a client that reads none is cut off
WS_NORMAL, WS_SLOW_CLIENT, WS_SHUTDOWN = 1000, 1008, 1012
POINTS_HELP = ("place the face by hand when it is not found: JSON {right_eye, left_eye, nose, "
               "mouth_right, mouth_left}, each [x, y] in image pixels (the subject's right)")
CONSENT_YES = frozenset({"true", "yes", "1", "on"})


class SessionDescription(BaseModel):
    type: Literal["offer"]
    sdp: str = Field(min_length=1, max_length=200_000)


class VideoSpec(BaseModel):
    fps: Literal[25] = 25
    size: int = Field(512, ge=128, le=1024)
    codec: Literal["vp8", "h264"] = "vp8"


class SessionRequest(BaseModel):
    avatar: str = "default"
    offer: SessionDescription | None = None
    mode: Literal["mirror", "broadcast"] = "mirror"
    video: VideoSpec = Field(default_factory=VideoSpec)
    # Visible "AI-generated" label; honoured when the operator's policy is "client".
    label: bool | None = None


class ViewerRequest(BaseModel):
    offer: SessionDescription


class SpeakRequest(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_SPEAK_CHARS)
    voice: str = Field("en-us", pattern=r"^[a-z]{2,3}(-[a-z0-9]{2,8})*(\+[a-z0-9]+)?$")


def _renderer_health(manager: SessionManager) -> dict[str, Any]:
    """Which renderer serves, and for the graph its runtime, batching and attached avatars."""
    graph, batcher = manager.graph, manager.render_batcher
    if graph is None or batcher is None:
        return {"kind": "cpu"}
    return {"kind": "graph", "runtime": graph.runtime, "avatars": len(graph.avatars),
            "cpu_fallbacks": manager.graph_fallbacks, "batching": batcher.stats.as_dict()}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None
           ) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


def body_limits(max_upload: int) -> tuple[BodyLimit, ...]:
    """Each route's body limit, enforced by :class:`vivify.streamer.server.guard.RequestGuard`
    before the
    route reads anything (any other route: 64 KiB)."""
    return (
        BodyLimit("POST", r"/v1/avatars", max_upload + MULTIPART_OVERHEAD, "image_too_large"),
        BodyLimit("POST", r"/v1/verify", MAX_VERIFY_BYTES + MULTIPART_OVERHEAD,
                  "file_too_large"),
        BodyLimit("POST", r"/v1/sessions", MAX_SESSION_BODY),
        BodyLimit("POST", r"/v1/sessions/[^/]+/viewers", MAX_SESSION_BODY),
    )


def create_app(manager: SessionManager, token: str | None = None,
               cors_origins: tuple[str, ...] = (), max_upload: int = 25 * 2**20,
               lifespan: Any = None) -> FastAPI:
    app = FastAPI(title="Vivify", version="0.1.0", lifespan=lifespan,
                  description="Real-time talking-head avatars from one portrait.")
    # Origin, token and body size are checked from the headers, before any route runs
    # (streamer/server/guard.py); CORS sits outside it so preflights are answered without a token.
    app.add_middleware(RequestGuard, config=GuardConfig(
        token=token, allowed_origins=cors_origins, limits=body_limits(max_upload)))
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["*"], allow_headers=["*"])
    registry = CollectorRegistry()
    g_sessions = Gauge("vivify_sessions", "live sessions", registry=registry)
    g_capacity = Gauge("vivify_capacity_sessions", "admission limit", registry=registry)
    g_viewers = Gauge("vivify_viewers", "broadcast viewers", registry=registry)
    g_late = Gauge("vivify_late_slots", "slots played late, live sessions", registry=registry)
    g_dropped = Gauge("vivify_dropped_pairs", "pairs dropped, live sessions", registry=registry)
    g_queue = Gauge("vivify_scheduler_queue", "jobs waiting for a worker", registry=registry)
    g_busy = Gauge("vivify_scheduler_busy_seconds", "worker time spent", registry=registry)
    g_created = Gauge("vivify_sessions_created", "sessions created since start",
                      registry=registry)
    g_batch_calls = Gauge("vivify_generator_calls", "batched generator engine calls",
                          registry=registry)
    g_batch_windows = Gauge("vivify_generator_windows", "windows generated in those calls",
                            registry=registry)
    g_batch_largest = Gauge("vivify_generator_batch_largest", "largest batch so far",
                            registry=registry)
    g_render_calls = Gauge("vivify_render_batch_calls", "renderer graph calls (--renderer graph)",
                           registry=registry)
    g_render_frames = Gauge("vivify_render_batch_frames", "frames rendered by the graph",
                            registry=registry)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(AvatarInputError)
    async def avatar_error(_: Request, exc: AvatarInputError) -> JSONResponse:
        status = 413 if exc.code == "image_too_large" else 422
        return _error(status, exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "not_found" if exc.status_code == 404 else "http_error",
                      str(exc.detail))

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "sessions": len(manager.sessions), "capacity": manager.capacity,
                "driver": manager.config.driver,
                "batching": manager.batcher.stats.as_dict() if manager.batcher else None,
                "renderer": _renderer_health(manager)}

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        live = list(manager.sessions.values())
        g_sessions.set(len(live))
        g_capacity.set(manager.capacity)
        g_viewers.set(sum(len(s.viewers) for s in live))
        g_late.set(sum(s.media.stats.late_slots for s in live))
        g_dropped.set(sum(s.media.stats.dropped_pairs for s in live))
        g_queue.set(manager.scheduler.queued)
        g_busy.set(manager.scheduler.busy_seconds)
        g_created.set(manager.created_total)
        if manager.batcher is not None:
            g_batch_calls.set(manager.batcher.stats.calls)
            g_batch_windows.set(manager.batcher.stats.windows)
            g_batch_largest.set(manager.batcher.stats.largest)
        if manager.render_batcher is not None:
            g_render_calls.set(manager.render_batcher.stats.calls)
            g_render_frames.set(manager.render_batcher.stats.windows)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ avatars
    @app.post("/v1/avatars", status_code=201, tags=["avatars"])
    async def create_avatar(
        request: Request, image: Annotated[UploadFile, File()],
        consent: Annotated[str | None, Form(description=CONSENT_STATEMENT)] = None,
        consent_by: Annotated[str | None, Form(max_length=200)] = None,
        points: Annotated[str | None, Form(max_length=2000, description=POINTS_HELP)] = None,
    ) -> dict[str, Any]:
        """Upload a portrait. ``consent`` must be true: the uploader asserts the right to use
        the likeness; who (``consent_by``, the client address) and when are stored with it."""
        if (consent or "").strip().lower() not in CONSENT_YES:
            raise ApiError("uploading a portrait needs consent=true: confirm that you have the "
                           f"right to use this likeness ({CONSENT_STATEMENT})",
                           code="consent_required")
        record_consent = ConsentRecord.now(
            by=(consent_by or "").strip() or "unnamed uploader",
            address=request.client.host if request.client else "unknown")
        data = await image.read(max_upload + 1)
        if len(data) > max_upload:
            raise TooLarge(f"upload exceeds {max_upload // 2**20} MiB", code="image_too_large")
        record = await manager.avatars.create(data, consent=record_consent, points=points)
        return record.public()

    @app.get("/v1/avatars", tags=["avatars"])
    async def list_avatars() -> dict[str, Any]:
        return {"avatars": [r.public() for r in manager.avatars.list()]}

    @app.get("/v1/avatars/{avatar_id}", tags=["avatars"])
    async def get_avatar(avatar_id: str) -> dict[str, Any]:
        return manager.avatars.get(avatar_id).public()

    @app.get("/v1/avatars/{avatar_id}/preview.jpg", tags=["avatars"])
    async def avatar_preview(avatar_id: str) -> Response:
        """The prepared face crop (no token needed: it is what viewers see anyway)."""
        return Response(await manager.avatars.preview(avatar_id), media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=3600"})

    @app.delete("/v1/avatars/{avatar_id}", status_code=204, tags=["avatars"])
    async def delete_avatar(avatar_id: str) -> Response:
        manager.avatars.delete(avatar_id)
        manager.collect_garbage_soon()  # its renderer and pack: tens of MB, freed now
        return Response(status_code=204)

    # ------------------------------------------------------------------ sessions
    @app.post("/v1/sessions", status_code=201, tags=["sessions"])
    async def create_session(body: SessionRequest) -> dict[str, Any]:
        manager.avatars.get(body.avatar)
        if body.video.size != manager.config.size:
            raise ApiError(f"this server renders {manager.config.size}² video",
                           code="unsupported_size")
        session, answer = await manager.create(
            body.avatar, body.mode, VideoOptions(body.video.fps, body.video.size,
                                                 body.video.codec),
            body.offer.model_dump() if body.offer else None, label=body.label)
        out: dict[str, Any] = {"id": session.id, "mode": session.mode, "avatar": session.avatar,
                               "provenance": session.provenance()}
        if answer is not None:
            out["answer"] = answer
        return out

    @app.post("/v1/sessions/{session_id}/viewers", status_code=201,
              tags=["sessions"])
    async def add_viewer(session_id: str, body: ViewerRequest) -> dict[str, Any]:
        session = manager.get(session_id)
        session.touch()
        viewer_id, answer = await session.add_viewer(body.offer.model_dump())
        return {"viewer": viewer_id, "answer": answer}

    @app.post("/v1/sessions/{session_id}/speak", status_code=202,
              tags=["sessions"])
    async def speak(session_id: str, body: SpeakRequest) -> dict[str, Any]:
        """Say ``text`` with the built-in demo voice (espeak-ng), as if an agent sent it."""
        session = manager.get(session_id)
        session.touch()
        try:
            audio = await synthesize(body.text, body.voice)
        except VoiceUnavailable as exc:
            raise ApiError(str(exc), code=exc.code, status=503) from exc
        except VoiceFailed as exc:
            raise ApiError(str(exc), code=exc.code, status=422) from exc
        try:
            session.media.push_audio(audio)
        except OverflowError as exc:
            raise ApiError(str(exc), code="buffer_full", status=409) from exc
        session.media.segment_end()
        return {"duration_ms": len(audio) * 1000 // 16000}

    @app.get("/v1/sessions/{session_id}", tags=["sessions"])
    async def session_stats(session_id: str) -> dict[str, Any]:
        return manager.get(session_id).stats()

    @app.delete("/v1/sessions/{session_id}", status_code=204,
                tags=["sessions"])
    async def delete_session(session_id: str) -> Response:
        await manager.get(session_id).aclose("deleted by the API")
        return Response(status_code=204)

    @app.websocket("/v1/sessions/{session_id}/ws")
    async def session_ws(ws: WebSocket, session_id: str) -> None:
        """The driver API (docs/api.md). Origin and token were checked by the guard (close
        4403/4401); an unknown session closes with 4404. When the session ends its
        ``session_closed`` event is sent, then the close frame: 1012 if the server is shutting
        down, 1000 otherwise."""
        await ws.accept()
        session = manager.sessions.get(session_id)
        if session is None:
            await ws.close(code=4404, reason=f"no session {session_id[:64]}")
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

    from vivify.streamer.integrations.livekit_worker import add_livekit_routes
    add_livekit_routes(app, manager)  # POST /v1/livekit/sessions: be a LiveKit agent's avatar

    # ------------------------------------------------------------------ provenance
    verify_slot = asyncio.Semaphore(1)  # ~1–2 s of CPU each: one at a time, sessions first

    @app.post("/v1/verify", tags=["provenance"])
    async def verify(request: Request, file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        """Is this video or image marked by Vivify? Same answer as ``vivify verify --json``."""
        from vivify.streamer.offline.verify import VerifyInputError, VerifyTooLarge, verify_file

        if file.size is not None and file.size > MAX_VERIFY_BYTES:
            raise TooLarge(f"upload exceeds {MAX_VERIFY_BYTES // 2**20} MiB",
                           code="file_too_large")
        async with verify_slot:
            try:
                result = await asyncio.to_thread(verify_file, file.file)
            except VerifyTooLarge as exc:
                raise TooLarge(str(exc), code=exc.code) from exc
            except VerifyInputError as exc:
                raise ApiError(str(exc), code=exc.code, status=422) from exc
            finally:
                release_free_heap()  # decoded frames are freed: give the pages back
        out: dict[str, Any] = json.loads(result.to_json())
        out["file"] = file.filename or "upload"
        return out

    app.mount("/", StaticFiles(packages=[(CLIENT_PACKAGE, ".")], html=True), name="client")
    return app


async def _read_messages(ws: WebSocket, session: Any, send: Any) -> None:
    """Apply the client's messages until it leaves or the session ends."""
    with contextlib.suppress(WebSocketDisconnect):
        async for message in _messages(ws):
            session.touch()
            _handle_ws(session, message, send)
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


def _handle_ws(session: Any, message: bytes | str, send: Any) -> None:
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

