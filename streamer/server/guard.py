"""What every request passes before the API reads a byte of its body: origin, token, size.

A pure ASGI middleware, outside FastAPI's routing and body parsing, because that is the only
place where "nothing is read before auth" can hold: a route's dependencies run after FastAPI
has already read and parsed the body (measured: a 300 MB JSON with no token took the server
from 284 MB to 1.2 GB before its 401). Here a request is refused from its headers alone:

1. **Origin** — a state-changing request (POST, PUT, PATCH, DELETE) or a WebSocket from a
   browser page of another site is refused (403 ``forbidden_origin``, close 4403) unless that
   origin is one the operator allowed (``--cors``). Requests without an ``Origin`` header
   (curl, SDKs, agents) are not browsers' and pass. This is the CSRF defence of a server that
   runs without a token on localhost.
2. **Token** — ``Authorization: Bearer <token>`` (WebSockets may put it in ``?token=``,
   since browsers cannot set headers on them), compared in constant time. 401 ``unauthorized``;
   on a WebSocket the handshake is accepted and closed with 4401, the documented code.
3. **Size** — each route has a body limit; a declared ``Content-Length`` over it is refused at
   once (413), and a streamed (chunked) body is counted as it arrives and cut off at the limit.

Which paths need the token: everything under ``/v1/`` except the avatar preview (what viewers
see anyway). Health, metrics, the API docs and the browser client are open.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PUBLIC_V1 = re.compile(r"/v1/avatars/[^/]+/preview\.jpg")
WS_UNAUTHORIZED = 4401
WS_FORBIDDEN_ORIGIN = 4403


@dataclass(frozen=True)
class BodyLimit:
    """Requests of ``method`` whose path matches ``pattern`` may carry ``limit`` bytes."""

    method: str
    pattern: str
    limit: int
    code: str = "too_large"  # the 413's error code (uploads say which limit: image_too_large)


@dataclass(frozen=True)
class GuardConfig:
    token: str | None = None
    allowed_origins: tuple[str, ...] = ()
    limits: tuple[BodyLimit, ...] = ()
    default_limit: int = 64 * 1024  # any other body (none of the other routes takes one)
    _compiled: tuple[tuple[str, re.Pattern[str], BodyLimit], ...] = field(init=False,
                                                                         repr=False)

    def __post_init__(self) -> None:
        if self.token is not None and not self.token.strip():
            raise ValueError("the token must not be empty (omit it to run without one)")
        object.__setattr__(self, "_compiled", tuple(
            (b.method, re.compile(b.pattern), b) for b in self.limits))

    def limit_for(self, method: str, path: str) -> BodyLimit:
        for m, pattern, limit in self._compiled:
            if m == method and pattern.fullmatch(path):
                return limit
        return BodyLimit(method, path, self.default_limit)


def bearer_token(header: str) -> str | None:
    """The credentials of an ``Authorization: Bearer <token>`` header (scheme in any case,
    any amount of blank space), or None for any other header."""
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return None
    return credentials


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison (``hmac.compare_digest``): no timing oracle on the token."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def needs_token(path: str) -> bool:
    return path.startswith("/v1/") and not PUBLIC_V1.fullmatch(path)


class BodyTooLarge(Exception):
    """Raised into the app's ``receive`` when a streamed body passes its limit; the 413 has
    already been sent."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _send_json(send: Send, status: int, code: str, message: str,
                     headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _refuse_websocket(receive: Receive, send: Send, code: int, reason: str) -> None:
    """Complete the handshake, then close with ``code``: a refusal before the handshake can
    only be an HTTP 403, which tells a client nothing (the API documents 4401 and 4403)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code, "reason": reason})


class RequestGuard:
    """The middleware (see the module docstring). Wraps the whole app: ``RequestGuard(app,
    GuardConfig(...))``, or ``app.add_middleware(RequestGuard, config=...)``."""

    def __init__(self, app: ASGIApp, config: GuardConfig) -> None:
        self.app = app
        self.config = config

    def _origin_allowed(self, scope: Scope) -> bool:
        origin = _header(scope, b"origin")
        if origin is None:
            return True  # not a browser page: nothing cross-site to defend against
        if origin in self.config.allowed_origins or "*" in self.config.allowed_origins:
            return True
        host = _header(scope, b"host")
        scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"),
                                                    scope.get("scheme", "http"))
        return host is not None and origin.lower() == f"{scheme}://{host}".lower()

    def _authorized(self, scope: Scope, query_token: bool) -> bool:
        token = self.config.token
        if token is None or not needs_token(scope["path"]):
            return True
        given = bearer_token(_header(scope, b"authorization") or "")
        if given is None and query_token:
            values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
            given = values[0] if values else None
        return token_matches(given, token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            if not self._origin_allowed(scope):
                await _refuse_websocket(receive, send, WS_FORBIDDEN_ORIGIN,
                                        "cross-site WebSocket refused")
            elif not self._authorized(scope, query_token=True):
                await _refuse_websocket(receive, send, WS_UNAUTHORIZED,
                                        "missing or wrong bearer token")
            else:
                await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method in STATE_CHANGING and not self._origin_allowed(scope):
            await _send_json(send, 403, "forbidden_origin",
                             "requests from another site's page are refused "
                             "(allow its origin with --cors)")
            return
        if not self._authorized(scope, query_token=False):
            await _send_json(send, 401, "unauthorized", "missing or wrong bearer token",
                             {"WWW-Authenticate": "Bearer"})
            return
        limit = self.config.limit_for(method, scope["path"])
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _send_json(send, 400, "bad_request", "malformed Content-Length")
                return
            if int(declared) > limit.limit:
                await _send_json(send, 413, limit.code, _too_large(int(declared), limit.limit))
                return
        await self._bounded(scope, receive, send, limit)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send,
                       limit: BodyLimit) -> None:
        """Run the app with its body counted as it streams in and cut off at ``limit``."""
        received = 0
        started = refused = False

        async def guarded_receive() -> Message:
            nonlocal received, refused, started
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.limit and not refused:
                    refused = True
                    if not started:
                        started = True
                        await _send_json(send, 413, limit.code,
                                         _too_large(received, limit.limit))
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out; the app's answer to a cut-off body is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with contextlib.suppress(BodyTooLarge):  # raised where the app read past the limit
            await self.app(scope, guarded_receive, guarded_send)


def _too_large(size: int, limit: int) -> str:
    return f"the request body is over this route's limit of {limit} bytes (got {size}+)"
