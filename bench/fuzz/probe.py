"""What every fuzz case shares: the bars, the verdict types, the :class:`Probe` (the server, its
token, clients, sessions to clean up) and the WebSocket helpers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from bench.fuzz.payloads import make_offer
from bench.harness.server import LiveServer

MAX_SESSIONS = 3
IDLE_TIMEOUT_S = 4.0
IDLE_GRACE_S = 5.0  # the bar: an idle session ends within --idle-timeout + 5 s
RSS_SLACK_MIB = 20.0  # the bar: memory within 20 MB of where it started
FAST_S = 1.5  # "401/413 in milliseconds": allow a loaded 2-core machine some slack
SETTLE_S = 1.5  # the server collects garbage ~1 s after a session closes
CHUNK = b"a" * 2**20  # 1 MiB of filler, reused: the probe never holds a huge body


@dataclass
class Outcome:
    passed: bool
    observed: str


@dataclass(frozen=True)
class Case:
    """One hostile scenario. ``memory``: "peak" = the server's RSS may not rise more than
    RSS_SLACK_MIB at any moment (nothing may be buffered), "after" = it must come back within
    that after the case (nothing may be kept); ``check_up``: /healthz afterwards."""

    name: str
    run: Callable[[Probe], Awaitable[Outcome]]
    why: str
    timeout_s: float = 15.0
    memory: str | None = None
    check_up: bool = True


@dataclass
class CaseResult:
    name: str
    passed: bool
    observed: str
    rss_before_mib: float | None
    rss_after_mib: float | None
    rss_peak_mib: float | None
    seconds: float


@dataclass
class Probe:
    """What the cases share: the server, the token, an authorized client, sessions to clean."""

    server: LiveServer
    quick: bool
    baseline_rss: float | None = None
    open_sessions: set[str] = field(default_factory=set)
    offers: dict[str, str] = field(default_factory=dict)
    restarts: int = 0

    @property
    def token(self) -> str:
        assert self.server.token, "the fuzz server runs with a token"
        return self.server.token

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def client(self, auth: bool = True, timeout: float = 20.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.server.url, headers=self.auth if auth else {},
                                 timeout=timeout, trust_env=False)

    def ws_url(self, session_id: str, token: str | None = None) -> str:
        base = f"ws://127.0.0.1:{self.server.port}/v1/sessions/{session_id}/ws"
        return base if token is None else f"{base}?token={token}"

    def body_mb(self, full: int) -> int:
        """Hostile body sizes in bytes: the issue's sizes, a third of them with --quick."""
        return (full // 3 if self.quick else full) * 10**6

    async def create(self, body: dict[str, Any], headers: dict[str, str] | None = None,
                     c: httpx.AsyncClient | None = None) -> httpx.Response:
        """POST /v1/sessions; a created session is remembered so cleanup() deletes it."""
        async with contextlib.AsyncExitStack() as stack:
            client = c if c is not None else await stack.enter_async_context(self.client())
            r = await client.post("/v1/sessions", json=body, headers=headers)
        self.track(r.status_code, r.content)
        return r

    def track(self, status: int, body: bytes) -> None:
        if status == 201:
            sid = (parse_json(body) or {}).get("id")
            if isinstance(sid, str):
                self.open_sessions.add(sid)

    async def create_broadcast(self) -> str:
        r = await self.create({"mode": "broadcast"})
        if r.status_code != 201:
            raise RuntimeError(f"could not create a broadcast session: {describe(r)}")
        return str(r.json()["id"])

    async def delete(self, session_id: str) -> None:
        self.open_sessions.discard(session_id)
        if not self.server.alive():
            return
        with contextlib.suppress(httpx.HTTPError):
            async with self.client(timeout=10) as c:
                await c.delete(f"/v1/sessions/{session_id}")

    async def cleanup(self) -> None:
        """Delete what a case left behind (a create the server should have refused)."""
        for sid in list(self.open_sessions):
            await self.delete(sid)

    async def healthy(self, wait_s: float = 5.0) -> bool:
        if not self.server.alive():
            return False
        with contextlib.suppress(httpx.HTTPError):
            async with self.client(auth=False, timeout=wait_s) as c:
                return (await c.get("/healthz")).status_code == 200
        return False

    async def warm_up(self) -> None:
        """One broadcast session created and deleted, then the RSS baseline: the first session
        loads what every later one shares, which is not a leak."""
        await self.delete(await self.create_broadcast())
        await asyncio.sleep(SETTLE_S)
        self.baseline_rss = self.server.rss()

    async def offer(self, kinds: str) -> str:
        """A real aiortc offer (recvonly ``kinds``: "av" or "v"), made once and kept."""
        if kinds not in self.offers:
            self.offers[kinds] = await make_offer(kinds)
        return self.offers[kinds]


# ============================================================================ answers


def parse_json(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def error_code(body: bytes) -> str | None:
    err = (parse_json(body) or {}).get("error")
    return err.get("code") if isinstance(err, dict) else None


def describe_parts(status: int | None, content_type: str, body: bytes) -> str:
    """``401 unauthorized`` for a JSON error, else the status, type and a snippet."""
    code = error_code(body)
    if code is not None and content_type.startswith("application/json"):
        return f"{status} {code}"
    snippet = body[:80].decode(errors="replace").replace("\n", " ")
    return f"{status} {content_type or 'no content-type'} {snippet!r}"


def describe(r: httpx.Response) -> str:
    return describe_parts(r.status_code, r.headers.get("content-type", ""), r.content)


def expect_error(r: httpx.Response, status: int, code: str) -> Outcome:
    """The documented JSON error, and nothing else (a text/plain 500 is a failure)."""
    ok = (r.status_code == status and error_code(r.content) == code
          and r.headers.get("content-type", "").startswith("application/json"))
    return Outcome(ok, describe(r))


# ============================================================================ WebSockets


@dataclass
class WsResult:
    """What a WebSocket gave: the awaited event, or how it ended instead."""

    event: dict[str, Any] | None
    close_code: int | None
    note: str

    @property
    def dropped(self) -> bool:
        return self.note.startswith("dropped")


def closed_result(exc: websockets.ConnectionClosed) -> WsResult:
    if exc.rcvd is None:
        return WsResult(None, None, "dropped without a close frame")
    return WsResult(None, exc.rcvd.code, f"closed with code {exc.rcvd.code}")


async def wait_event(ws: ClientConnection, match: Callable[[dict[str, Any]], bool],
                     within_s: float) -> WsResult:
    """Read events until one ``match`` accepts, the socket closes, or ``within_s`` passes."""
    deadline = time.monotonic() + within_s
    seen: list[str] = []
    try:
        while (left := deadline - time.monotonic()) > 0:
            raw = await asyncio.wait_for(ws.recv(), left)
            event = parse_json(raw.encode() if isinstance(raw, str) else raw) or {}
            if match(event):
                return WsResult(event, None, f"event {event.get('type')}/{event.get('code')}")
            seen.append(str(event.get("type")))
    except TimeoutError:
        pass
    except websockets.ConnectionClosed as exc:
        return closed_result(exc)
    extra = f" (saw: {', '.join(seen[:5])})" if seen else ""
    return WsResult(None, None, f"no answer within {within_s:.0f} s{extra}")


def ws_connect(url: str, headers: dict[str, str] | None = None) -> websockets.connect:
    """No compression (the frame sizes on the wire are the ones the case names), no proxy."""
    return websockets.connect(url, additional_headers=headers, compression=None, proxy=None,
                              open_timeout=5, close_timeout=2, max_size=2**22)


@contextlib.asynccontextmanager
async def ws_session(p: Probe) -> AsyncIterator[tuple[str, ClientConnection]]:
    """A fresh broadcast session with its WebSocket (token in the query, as browsers do)."""
    sid = await p.create_broadcast()
    try:
        async with ws_connect(p.ws_url(sid, p.token)) as ws:
            yield sid, ws
    finally:
        await p.delete(sid)


def is_error(event: dict[str, Any]) -> bool:
    return event.get("type") == "error"


async def expect_ws_error(p: Probe, text: str, close_codes: tuple[int, ...] = ()) -> Outcome:
    """Send one hostile text frame: the answer must be a ``bad_message`` error (or one of
    ``close_codes`` with a close frame); then the server must survive rendering a few frames
    with whatever it accepted (a NaN used to segfault inside OpenCV)."""
    async with ws_session(p) as (_, ws):
        await ws.send(text)
        res = await wait_event(ws, is_error, 3.0)
        await asyncio.sleep(1.0)
    ok = ((res.event is not None and res.event.get("code") == "bad_message")
          or res.close_code in close_codes)
    note = res.note if res.event or res.close_code or res.dropped else f"accepted ({res.note})"
    if not p.server.alive():
        return Outcome(False, f"{note}; then the server died")
    return Outcome(ok, note)


async def ws_close_code(url: str, headers: dict[str, str] | None = None) -> WsResult:
    """Connect and wait for the server's close frame: the handshake must succeed (a 403
    instead is what browsers cannot read), then a documented close code."""
    try:
        async with ws_connect(url, headers) as ws:
            res = await wait_event(ws, lambda e: True, 5.0)
            if res.event is not None:
                return WsResult(res.event, None, f"accepted: got {res.note}, no close")
            if res.close_code is None and not res.dropped:
                return WsResult(None, None, "accepted: no close within 5 s")
            return res
    except websockets.InvalidStatus as exc:
        return WsResult(None, None, f"handshake refused with HTTP {exc.response.status_code}")
    except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
        return WsResult(None, None, f"handshake failed: {type(exc).__name__}: {exc}")

