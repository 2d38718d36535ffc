"""Forwarding to a node: HTTP requests (JSON relayed as is) and the session WebSocket (both ways).

Every forward is bounded (:class:`Timeouts`): a node that stops answering costs a client a few
seconds and an error that says which node, never a hung request. The proxy never looks inside
SDP: a node's answer carries the node's own ICE candidates, so media flows between the client
and the node directly, and the ingress carries only signalling and events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response

log = logging.getLogger(__name__)
ABNORMAL = 1006  # no close frame: the connection just dropped
WS_MAX_MESSAGE = 128 * 1024  # the server's own limit on a client message (PCM ≤ 64 KiB)
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length",
                        "content-encoding", "server", "date"})


@dataclass(frozen=True)
class Timeouts:
    """Seconds; every forward has one."""

    connect: float = 2.0
    create: float = 20.0  # a session: avatar load (cold: seconds), SDP answer, ICE gathering
    request: float = 8.0  # stats, delete, viewers
    speak: float = 20.0  # the demo voice synthesises the whole text first
    health: float = 1.5
    ws_open: float = 5.0


class NodeUnreachable(Exception):
    """The node did not answer (refused, reset, timed out)."""

    def __init__(self, node: str, exc: BaseException) -> None:
        super().__init__(f"node {node} did not answer ({type(exc).__name__}: {exc or 'timeout'})")
        self.node = node


def error(status: int, code: str, message: str,
          headers: dict[str, str] | None = None) -> JSONResponse:
    """The API's error shape, ``{"error": {"code", "message"}}`` (docs/api.md)."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


class HttpForwarder:
    """One pooled HTTP client for all nodes, with the nodes' token."""

    def __init__(self, token: str, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        self.http = httpx.AsyncClient(headers={"authorization": f"Bearer {token}"},
                                      trust_env=False,  # loopback/cluster: never a proxy
                                      limits=httpx.Limits(max_connections=256))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def send(self, node: str, method: str, url: str, *, limit_s: float,
                   body: bytes | None = None, content_type: str | None = "application/json"
                   ) -> httpx.Response:
        """One request to a node; :class:`NodeUnreachable` when nothing came back in time."""
        t = httpx.Timeout(limit_s, connect=self.timeouts.connect)
        headers = {"content-type": content_type} if body is not None and content_type else None
        try:
            return await self.http.request(method, url, content=body, headers=headers,
                                           timeout=t)
        except (httpx.TransportError, OSError) as exc:
            raise NodeUnreachable(node, exc) from exc

    async def health(self, node: str, url: str) -> dict[str, Any]:
        r = await self.send(node, "GET", url + "/healthz", limit_s=self.timeouts.health)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data


def relay(response: httpx.Response) -> Response:
    """The node's answer as the client's (status, body and its useful headers as they came)."""
    headers = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
    return Response(response.content, status_code=response.status_code, headers=headers)


CloseFn = Callable[[dict[str, Any] | None, int, str], Awaitable[None]]


class SocketBridge:
    """One client WebSocket bridged to its session's WebSocket on the node.

    :meth:`end` lets the ingress finish it from outside (node lost): the client gets ``event``
    as its last message, then ``code``. Messages pass through untouched, text as text and
    binary (PCM) as binary; the node's close code and reason reach the client unchanged.
    """

    def __init__(self, client: WebSocket, session_id: str, node: str) -> None:
        self.client, self.session_id, self.node = client, session_id, node
        self.upstream: Any = None
        self._ended = asyncio.Event()
        self._final: tuple[dict[str, Any] | None, int, str] | None = None
        self.upstream_close: tuple[int, str] | None = None
        self.client_gone = False

    async def open(self, url: str, token: str, limit_s: float) -> None:
        from websockets.asyncio.client import connect

        self.upstream = await connect(url, additional_headers={"authorization": f"Bearer {token}"},
                                      open_timeout=limit_s, max_size=WS_MAX_MESSAGE, proxy=None,
                                      ping_interval=10, ping_timeout=10, close_timeout=2)

    def end(self, event: dict[str, Any] | None, code: int, reason: str) -> None:
        """Finish the bridge: send ``event`` (if any) to the client, then close it with
        ``code``."""
        if self._final is None:
            self._final = (event, code, reason)
        self._ended.set()

    async def run(self, on_upstream_lost: Callable[[], Awaitable[None]]) -> None:
        """Pump both ways until one side closes or :meth:`end` is called. When the node's side
        drops without a close frame, ``on_upstream_lost`` runs first (the ingress checks the
        node; if it is gone, it calls :meth:`end` with the ``node_lost`` event)."""
        up = asyncio.create_task(self._from_node())
        down = asyncio.create_task(self._from_client())
        ended = asyncio.create_task(self._ended.wait())
        try:
            done, _ = await asyncio.wait({up, down, ended}, return_when=asyncio.FIRST_COMPLETED)
            if down in done and down.exception() is not None:
                # A send to the node failed: its side is closing; hear how (bounded).
                await asyncio.wait({up}, timeout=2.0)
                done = {t for t in (up, down, ended) if t.done()}
                if up not in done:
                    up.cancel()
                    done.add(up)
            if self.client_gone:
                return
            if up in done and self._final is None and self.upstream_close is None:
                await on_upstream_lost()  # may call end() with node_lost
            if self._final is None and up in done:
                code, reason = self.upstream_close or (1011, f"node {self.node} dropped the "
                                                              "connection")
                self._final = (None, code, reason)
        finally:
            for task in (up, down, ended):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await self._finish()

    async def _finish(self) -> None:
        if self.upstream is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.upstream.close(), 2.0)
        if self._final is None or self.client_gone:
            return  # the client left first
        event, code, reason = self._final
        with contextlib.suppress(Exception):
            if event is not None:
                await self.client.send_text(json.dumps(event))
            await self.client.close(code=code, reason=reason[:120])

    async def _from_node(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self.upstream:
                try:
                    if isinstance(message, bytes):
                        await self.client.send_bytes(message)
                    else:
                        await self.client.send_text(message)
                except Exception:  # the client is gone: nothing to tell it
                    self.client_gone = True
                    return
        except ConnectionClosed:
            pass
        code = self.upstream.close_code
        if code is not None and code != ABNORMAL:  # the node closed: its code goes through
            self.upstream_close = (int(code), str(self.upstream.close_reason or ""))

    async def _from_client(self) -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                msg = await self.client.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                if msg.get("bytes") is not None:
                    await self.upstream.send(msg["bytes"])
                elif msg.get("text") is not None:
                    await self.upstream.send(msg["text"])
