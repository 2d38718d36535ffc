"""The HTTP and WebSocket calls of the public API (docs/api.md), with its errors as exceptions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection
    from websockets.asyncio.client import ClientConnection

SESSIONS = "/v1/sessions"
CLEANUP_S = 5.0  # a DELETE made on the way out of a failed call waits this long at most
WS_MAX_MESSAGE = 2**20  # bytes; the server's events are small, its limit on ours is 128 KiB


class ClientError(Exception):
    """The server refused a request: its HTTP ``status`` and the API's error ``code`` and
    ``message`` (``{"error": {"code", "message"}}``). ``retry_after`` is the ``Retry-After``
    header of a ``503 server_full``, in seconds as sent, else ``None``."""

    def __init__(self, status: int, code: str, message: str,
                 retry_after: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" if status else message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, response: httpx.Response) -> ClientError:
        """The API's error body, or (a proxy's page, an old server) the status and some text."""
        try:
            err = response.json()["error"]
            code, message = str(err["code"]), str(err["message"])
        except (ValueError, KeyError, TypeError):
            code = "http_error"
            message = response.text[:200] or response.reason_phrase
        return cls(response.status_code, code, message, response.headers.get("retry-after"))


class ServerUnreachable(ClientError):
    """No server answered at the URL (refused, DNS, TLS, timeout): ``status`` 0."""

    def __init__(self, url: str, exc: BaseException) -> None:
        super().__init__(0, "unreachable",
                         f"cannot reach the Vivify server at {url} ({type(exc).__name__}: "
                         f"{exc or 'no answer'}); is `vivify serve` running there?")
        self.url = url


class ApiClient:
    """One server's public API. ``token`` goes out as ``Authorization: Bearer`` on every request
    and on the WebSocket; ``transport`` replaces the network (``httpx.ASGITransport(app)`` in
    tests). Use as ``async with ApiClient(url) as api:`` or call :meth:`aclose`."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers,
                                       timeout=timeout, transport=transport)

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ plumbing
    async def request(self, method: str, path: str, *, expect: tuple[int, ...] = (200,),
                      **kwargs: Any) -> httpx.Response:
        """One call (``kwargs`` go to httpx); :class:`ClientError` unless its status is in
        ``expect``, :class:`ServerUnreachable` when no server answered."""
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnreachable(self.base_url, exc) from exc
        if response.status_code not in expect:
            raise ClientError.from_response(response)
        return response

    async def _json(self, method: str, path: str, expect: int = 200,
                    **kwargs: Any) -> dict[str, Any]:
        data: dict[str, Any] = (await self.request(method, path, expect=(expect,),
                                                   **kwargs)).json()
        return data

    # ------------------------------------------------------------------ operations
    async def health(self) -> dict[str, Any]:
        """``GET /healthz``: status, sessions, capacity, driver, renderer."""
        return await self._json("GET", "/healthz")

    # ------------------------------------------------------------------ avatars
    async def upload_avatar(self, image: bytes, *, filename: str = "portrait.png",
                            consent_by: str | None = None,
                            points: dict[str, Any] | None = None) -> dict[str, Any]:
        """``POST /v1/avatars`` with ``consent=true`` (the caller asserts the right to use the
        likeness, docs/api.md); the avatar's record, ``id`` included."""
        import json

        data = {"consent": "true"}
        if consent_by is not None:
            data["consent_by"] = consent_by
        if points is not None:
            data["points"] = json.dumps(points)
        return await self._json("POST", "/v1/avatars", 201, data=data,
                                files={"image": (filename, image)})

    # ------------------------------------------------------------------ sessions
    async def create_session(self, pc: RTCPeerConnection | None, body: dict[str, Any],
                             path: str = SESSIONS) -> dict[str, Any]:
        """``POST`` ``body`` with ``pc``'s offer (made here unless already set), then apply the
        answer to ``pc``; the server's JSON (``id``, ``provenance``, ``answer``...).

        ``pc=None`` posts ``body`` as is (a broadcast driven only over its WebSocket). If the
        answer cannot be applied, the new session is deleted before the error is raised, so a
        failed call never leaves a session behind on the server.
        """
        if pc is None:
            return await self._json("POST", path, 201, json=body)
        if pc.localDescription is None:
            await pc.setLocalDescription(await pc.createOffer())
        offer = {"type": "offer", "sdp": pc.localDescription.sdp}
        data = await self._json("POST", path, 201, json=dict(body, offer=offer))
        try:
            await _apply_answer(pc, data["answer"])
        except BaseException:
            if path == SESSIONS and "id" in data:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.delete_session(str(data["id"])), CLEANUP_S)
            raise
        return data

    async def add_viewer(self, session_id: str, pc: RTCPeerConnection) -> dict[str, Any]:
        """Watch a session: ``pc``'s (receive-only) offer to ``POST /v1/sessions/{id}/viewers``,
        the answer applied; ``{"viewer", "answer"}``."""
        return await self.create_session(pc, {}, f"{SESSIONS}/{session_id}/viewers")

    async def session_stats(self, session_id: str) -> dict[str, Any]:
        """``GET /v1/sessions/{id}``: mode, viewers, connection, ``media``, provenance..."""
        return await self._json("GET", f"{SESSIONS}/{session_id}")

    async def delete_session(self, session_id: str) -> bool:
        """``DELETE /v1/sessions/{id}``: ``True`` if it ended now, ``False`` if it was already
        gone (404: it ended by itself, or the server closed it). Bound it with
        ``asyncio.wait_for`` on the way out of a call."""
        r = await self.request("DELETE", f"{SESSIONS}/{session_id}", expect=(204, 404))
        return r.status_code == 204

    # ------------------------------------------------------------------ the session WebSocket
    def websocket_url(self, session_id: str) -> str:
        return "ws" + self.base_url[len("http"):] + f"{SESSIONS}/{session_id}/ws"

    async def open_websocket(self, session_id: str) -> ClientConnection:
        """The session's WebSocket (PCM and JSON in, events out), the token in its header.

        A handshake that fails is a :class:`ClientError` (code ``websocket_failed``); a refusal
        by the server (4401 token, 4404 session) completes the handshake and shows as the close
        code of the connection returned.
        """
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        url = self.websocket_url(session_id)
        try:
            return await connect(url, additional_headers=self.headers,
                                 open_timeout=self.timeout, max_size=WS_MAX_MESSAGE)
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise ClientError(0, "websocket_failed",
                              f"cannot open the session WebSocket {url}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def websocket(self, session_id: str) -> AsyncIterator[ClientConnection]:
        """``async with api.websocket(id) as ws:`` — :meth:`open_websocket`, closed at the end."""
        ws = await self.open_websocket(session_id)
        try:
            yield ws
        finally:
            await ws.close()


async def _apply_answer(pc: RTCPeerConnection, answer: dict[str, Any]) -> None:
    from aiortc import RTCSessionDescription

    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
