"""The HTTP/WebSocket API (FastAPI on uvicorn: OpenAPI docs for free, pydantic messages).

This module wires the app: the request guard and CORS around it, the error handlers that turn
every failure into ``{"error": {"code", "message"}}``, the routers of
:mod:`vivify.streamer.server.routes` (one per resource), the LiveKit route and the browser
client. See docs/api.md for the full contract.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from vivify.engines.errors import AvatarInputError
from vivify.streamer.server.errors import ApiError
from vivify.streamer.server.guard import BodyLimit, GuardConfig, RequestGuard
from vivify.streamer.server.manager import SessionManager
from vivify.streamer.server.routes import avatars, health, sessions, verify, websocket
from vivify.streamer.server.routes.verify import MAX_VERIFY_BYTES

CLIENT_PACKAGE = "vivify.client_web"  # package data: served from wherever the package is installed
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and form fields around an uploaded file
MAX_SESSION_BODY = 256 * 1024  # a session request: an SDP offer (≤ 200 000 characters) + a little


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


def body_limits(max_upload: int) -> tuple[BodyLimit, ...]:
    """Each route's body limit, enforced by :class:`vivify.streamer.server.guard.RequestGuard`
    before the route reads anything (any other route: 64 KiB)."""
    return (
        BodyLimit("POST", r"/v1/avatars", max_upload + MULTIPART_OVERHEAD, "image_too_large"),
        BodyLimit("POST", r"/v1/verify", MAX_VERIFY_BYTES + MULTIPART_OVERHEAD,
                  "file_too_large"),
        BodyLimit("POST", r"/v1/sessions", MAX_SESSION_BODY),
        BodyLimit("POST", r"/v1/sessions/[^/]+/viewers", MAX_SESSION_BODY),
    )


def add_error_handlers(app: FastAPI) -> None:
    """Every error the routes raise, and FastAPI's own, as ``{"error": {"code", "message"}}``."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(AvatarInputError)
    async def avatar_error(_: Request, exc: AvatarInputError) -> JSONResponse:
        status = 413 if exc.code == "image_too_large" else 422
        return error_response(status, exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code,
                              "not_found" if exc.status_code == 404 else "http_error",
                              str(exc.detail))


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
    add_error_handlers(app)
    app.include_router(health.router(manager))
    app.include_router(avatars.router(manager, max_upload))
    app.include_router(sessions.router(manager))
    app.include_router(websocket.router(manager))

    from vivify.streamer.integrations.livekit_worker import add_livekit_routes
    add_livekit_routes(app, manager)  # POST /v1/livekit/sessions: be a LiveKit agent's avatar

    app.include_router(verify.router())
    app.mount("/", StaticFiles(packages=[(CLIENT_PACKAGE, ".")], html=True), name="client")
    return app
