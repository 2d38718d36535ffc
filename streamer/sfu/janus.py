"""An async client for Janus's HTTP API (https://janus.conf.meetecho.com/docs/rest.html).

Janus's HTTP transport is request/answer plus one long poll per API session: a plugin request
that needs work (a VideoRoom ``join``, ``publish``, ``start``) is answered ``ack`` at once and
its result arrives later, through ``GET /janus/<session>``, tagged with the request's
``transaction``. :class:`JanusSession` runs that long poll, hands each result to the request
waiting on its transaction and every other event (``webrtcup``, ``hangup``, a VideoRoom
``unpublished``...) to the queue of the handle it is about. The long poll also keeps the
session alive (Janus ends a session after ``session_timeout`` s without a request); an explicit
``keepalive`` goes out only when the poll has been failing.

When Janus cannot be reached for ``lost_after_s`` the session counts as lost: every waiting
request fails with :class:`JanusError` and ``lost`` is set, so an owner (a publisher, a test)
can let go of what it held there instead of waiting on a server that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from typing import Any

import httpx

log = logging.getLogger(__name__)

VIDEOROOM = "janus.plugin.videoroom"
POLL_TIMEOUT_S = 40.0  # Janus answers an idle long poll after 30 s with a keepalive
REQUEST_TIMEOUT_S = 10.0
MAX_EVENTS = 16  # events one long poll may bring back at once


class JanusError(RuntimeError):
    """Janus refused a request or cannot be reached; ``code`` is Janus's error code if any."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def _check(reply: dict[str, Any], what: str) -> dict[str, Any]:
    """Janus's own errors and a plugin's (``error_code`` in its data) as :class:`JanusError`."""
    if reply.get("janus") == "error":
        err = reply.get("error", {})
        raise JanusError(f"{what}: {err.get('reason', 'error')}", err.get("code"))
    data = reply.get("plugindata", {}).get("data", {})
    if "error_code" in data:
        raise JanusError(f"{what}: {data.get('error', 'error')}", data["error_code"])
    return reply


class JanusHandle:
    """A plugin handle: synchronous requests, asynchronous messages, its own events."""

    def __init__(self, session: JanusSession, handle_id: int) -> None:
        self.session = session
        self.id = handle_id
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.detached = False

    @property
    def path(self) -> str:
        return f"{self.session.path}/{self.id}"

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """A request the plugin answers at once (VideoRoom ``create``, ``exists``, ``destroy``,
        ``listparticipants``): its data."""
        reply = await self.session.post(self.path, {"janus": "message", "body": body},
                                        what=str(body.get("request")))
        return dict(reply.get("plugindata", {}).get("data", {}))

    async def message(self, body: dict[str, Any], jsep: dict[str, Any] | None = None,
                      timeout_s: float = REQUEST_TIMEOUT_S,
                      ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """A request answered later (``join``, ``publish``, ``start``): its event's data and
        the JSEP that came with it, if any."""
        payload: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            payload["jsep"] = jsep
        event = await self.session.post(self.path, payload, what=str(body.get("request")),
                                        wait_event=True, timeout_s=timeout_s)
        return dict(event.get("plugindata", {}).get("data", {})), event.get("jsep")

    async def detach(self) -> None:
        """Leave the plugin (a VideoRoom publisher leaves its room); safe to call twice."""
        if self.detached:
            return
        self.detached = True
        self.session.handles.pop(self.id, None)
        if not self.session.lost.is_set():
            with contextlib.suppress(JanusError):
                await self.session.post(self.path, {"janus": "detach"}, what="detach")


class JanusSession:
    """One Janus API session: ``await JanusSession.create(url)``, then :meth:`attach`."""

    def __init__(self, url: str, session_id: int, client: httpx.AsyncClient,
                 owns_client: bool, api_secret: str | None, lost_after_s: float) -> None:
        self.url = url.rstrip("/")
        self.id = session_id
        self.client = client
        self.handles: dict[int, JanusHandle] = {}
        self.lost = asyncio.Event()  # Janus is gone, or the session ended there
        self._owns_client = owns_client
        self._api_secret = api_secret
        self._lost_after_s = lost_after_s
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._closed = False
        self._poll = asyncio.create_task(self._poll_loop(), name=f"janus-poll-{session_id}")

    @classmethod
    async def create(cls, url: str, client: httpx.AsyncClient | None = None,
                     api_secret: str | None = None, lost_after_s: float = 3.0) -> JanusSession:
        owns = client is None
        http = client or httpx.AsyncClient(timeout=httpx.Timeout(REQUEST_TIMEOUT_S,
                                                                 read=POLL_TIMEOUT_S))
        try:
            reply = await _post(http, url.rstrip("/"), _with_secret({"janus": "create"},
                                                                    api_secret), "create")
        except BaseException:
            if owns:
                await http.aclose()
            raise
        return cls(url, int(reply["data"]["id"]), http, owns, api_secret, lost_after_s)

    @property
    def path(self) -> str:
        return f"{self.url}/{self.id}"

    async def attach(self, plugin: str = VIDEOROOM) -> JanusHandle:
        reply = await self.post(self.path, {"janus": "attach", "plugin": plugin},
                                what="attach")
        handle = JanusHandle(self, int(reply["data"]["id"]))
        self.handles[handle.id] = handle
        return handle

    async def post(self, path: str, payload: dict[str, Any], what: str,
                   wait_event: bool = False, timeout_s: float = REQUEST_TIMEOUT_S,
                   ) -> dict[str, Any]:
        """POST one API request; with ``wait_event``, wait for the event answering it."""
        if self.lost.is_set():
            raise JanusError(f"{what}: the Janus session is gone")
        transaction = secrets.token_hex(8)
        payload = _with_secret(dict(payload, transaction=transaction), self._api_secret)
        future: asyncio.Future[dict[str, Any]] | None = None
        if wait_event:
            future = asyncio.get_running_loop().create_future()
            self._waiting[transaction] = future
        try:
            reply = await _post(self.client, path, payload, what)
            if future is None:
                return reply
            if reply.get("janus") != "ack":  # some plugins answer at once even so
                return reply
            async with asyncio.timeout(timeout_s):
                return _check(await future, what)
        except TimeoutError:
            raise JanusError(f"{what}: no answer from Janus within {timeout_s:g} s") from None
        finally:
            self._waiting.pop(transaction, None)

    async def _poll_loop(self) -> None:
        """The long poll: route each event; after ``lost_after_s`` of failures, give up."""
        failing_since: float | None = None
        loop = asyncio.get_running_loop()
        for attempt in itertools.count():
            try:
                r = await self.client.get(self.path, params={"maxev": MAX_EVENTS,
                                                             "rid": attempt},
                                          timeout=httpx.Timeout(REQUEST_TIMEOUT_S,
                                                                read=POLL_TIMEOUT_S))
                r.raise_for_status()
                body = r.json()
            except (httpx.HTTPError, ValueError) as exc:
                now = loop.time()
                failing_since = failing_since if failing_since is not None else now
                if now - failing_since >= self._lost_after_s:
                    self._mark_lost(f"Janus unreachable: {type(exc).__name__}: {exc}")
                    return
                await asyncio.sleep(0.2)
                continue
            failing_since = None
            if self._closed:
                return
            for event in body if isinstance(body, list) else [body]:
                if self._route(event):
                    return

    def _route(self, event: dict[str, Any]) -> bool:
        """Hand ``event`` on; True when it says the session itself is over."""
        kind = event.get("janus")
        if kind == "keepalive":
            return False
        if kind == "error" and event.get("error", {}).get("code") == 458:  # no such session
            self._mark_lost("the Janus session expired")
            return True
        future = self._waiting.get(str(event.get("transaction")))
        if future is not None and not future.done() and kind != "ack":
            future.set_result(event)
            return False
        handle = self.handles.get(int(event.get("sender", 0) or 0))
        if handle is not None:
            handle.events.put_nowait(event)
        elif kind not in ("ack", "success"):
            log.debug("janus event for no handle: %s", event)
        return False

    def _mark_lost(self, reason: str) -> None:
        if self.lost.is_set():
            return
        log.warning("janus session %s lost: %s", self.id, reason)
        self.lost.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(JanusError(reason))
        for handle in self.handles.values():
            handle.events.put_nowait({"janus": "lost", "reason": reason})

    async def aclose(self) -> None:
        """Destroy the session at Janus (its handles go with it); safe to call twice."""
        if self._closed:
            return
        self._closed = True  # the long poll stops at its next answer
        if not self.lost.is_set():
            with contextlib.suppress(JanusError):
                await self.post(self.path, {"janus": "destroy"}, what="destroy")
        self.lost.set()
        self._poll.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._poll
        if self._owns_client:
            await self.client.aclose()


def _with_secret(payload: dict[str, Any], api_secret: str | None) -> dict[str, Any]:
    payload = dict(payload)
    payload.setdefault("transaction", secrets.token_hex(8))
    return dict(payload, apisecret=api_secret) if api_secret else payload


async def _post(client: httpx.AsyncClient, path: str, payload: dict[str, Any],
                what: str) -> dict[str, Any]:
    try:
        r = await client.post(path, json=payload, timeout=REQUEST_TIMEOUT_S)
        r.raise_for_status()
        reply = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise JanusError(f"{what}: Janus unreachable: {type(exc).__name__}: {exc}") from exc
    return _check(reply, what)
