"""``make fuzz``: a hostile client against a real ``vivify serve`` on loopback (issue 15).

``python -m bench.fuzz [--quick] [--out PATH]`` starts the server the way an operator does
(``python -m vivify.streamer.cli.main serve --token T --max-sessions 3 --idle-timeout 4``, a private
``VIVIFY_HOME`` whose ``models`` links to the face models), its stdout and stderr in a log
file, and replays every case of issue 15 against it, each with its own time limit: non-finite
and out-of-range controls, deep and oversize WebSocket frames, WebSocket auth failures, huge
bodies before and after auth, a burst of creates on a cold avatar, idle sessions, malformed
SDP, a decompression-bomb image for ``/v1/verify``, a foreign ``Origin``, memory at the end,
SIGTERM with a WebSocket open, and the token in the log.

Each case records whether it passed, what was observed, and the server's RSS (VmRSS from
/proc; the server is one process, its workers are threads) before, after and at its peak
(sampled every 10 ms). After each case the server must still answer ``/healthz``; a server
that died is restarted (and the death recorded), so one crash does not hide the other cases.
One line per case, then ``fuzz: N passed, M failed``; the JSON report goes to ``--out``
(``bench/results/fuzz-latest.json``) with the server log next to it (``.log``). Exit 1 if any
case failed. ``--quick`` shrinks the huge bodies (100/150 MB instead of 300/500 MB); every case
still runs. About a minute either way when the server passes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from bench.loopback import rss_mib

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results" / "fuzz-latest.json"
MAX_SESSIONS = 3
IDLE_TIMEOUT_S = 4.0
IDLE_GRACE_S = 5.0  # the bar: an idle session ends within --idle-timeout + 5 s
RSS_SLACK_MIB = 20.0  # the bar: memory within 20 MB of where it started
FAST_S = 1.5  # "401/413 in milliseconds": allow a loaded 2-core machine some slack
SETTLE_S = 1.5  # the server collects garbage ~1 s after a session closes
CHUNK = b"a" * 2**20  # 1 MiB of filler, reused: the probe never holds a huge body
OPTIONAL_FLAGS = ("--idle-timeout",)  # dropped (and recorded) if this server does not know them


# ============================================================================ the server


def free_port() -> int:
    """A TCP port nobody listens on now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``vivify serve`` as a child process, exactly as an operator starts it."""

    def __init__(self, home: Path, token: str) -> None:
        self.home = home
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "server.log"
        self.flags = ["--max-sessions", str(MAX_SESSIONS), "--idle-timeout", str(IDLE_TIMEOUT_S)]
        self.dropped_flags: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        return [sys.executable, "-m", "vivify.streamer.cli", "serve", "--port", str(self.port),
                "--token", self.token, *self.flags]

    def start(self, timeout: float = 90.0) -> None:
        """Start and wait for ``/healthz``; a flag this server rejects is dropped and noted
        (so a server without ``--idle-timeout`` is still probed: its idle cases then fail)."""
        while True:
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    self.command(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                    env=dict(os.environ, VIVIFY_HOME=str(self.home), PYTHONUNBUFFERED="1"))
            self.starts += 1
            if self._wait_ready(timeout):
                return
            text = self.log_text()[offset:]
            unknown = [f for f in OPTIONAL_FLAGS if f in self.flags and
                       "unrecognized arguments" in text and f in text]
            if self.proc.poll() is not None and unknown:
                i = self.flags.index(unknown[0])
                self.dropped_flags += self.flags[i:i + 2]
                del self.flags[i:i + 2]
                continue
            self.kill()
            raise RuntimeError(f"server did not start: {text[-2000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0, trust_env=False) as c:
            while time.monotonic() < deadline and self.alive():
                with contextlib.suppress(httpx.HTTPError):
                    if c.get(f"{self.url}/healthz").status_code == 200:
                        return True
                time.sleep(0.1)
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> float | None:
        return rss_mib(self.pid) if self.alive() else None

    def kill(self) -> None:
        """Last resort (a hung or leftover server): SIGKILL and reap."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def redacted_command(self) -> list[str]:
        return [a.replace(self.token, "<TOKEN>") for a in self.command()]


class RssSampler:
    """The server's peak RSS while a case runs: a thread reads /proc every 10 ms, because a
    body the server buffers and frees again shows only at its peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        m = rss_mib(self.pid)
        if m is not None and (self.peak is None or m > self.peak):
            self.peak = m

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sample()


# ============================================================================ the probe


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

    server: ServerProcess
    quick: bool
    baseline_rss: float | None = None
    open_sessions: set[str] = field(default_factory=set)
    offers: dict[str, str] = field(default_factory=dict)
    restarts: int = 0

    @property
    def token(self) -> str:
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


# ============================================================================ helpers


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


# ------------------------------------------------------------------ raw HTTP


@dataclass
class RawResponse:
    status: int | None
    content_type: str
    body: bytes
    seconds: float | None  # request start → response head
    sent_at_head: int | None  # body bytes sent when the response head arrived
    size: int  # the whole body
    note: str

    def summary(self) -> str:
        if self.status is None or self.seconds is None or self.sent_at_head is None:
            return self.note
        return (f"{describe_parts(self.status, self.content_type, self.body)} after "
                f"{self.seconds:.2f} s, {self.sent_at_head / 1e6:.0f} of {self.size / 1e6:.0f} "
                f"MB sent")

    @property
    def read_first(self) -> bool:
        """Did the server take (nearly) the whole body before answering?"""
        return self.sent_at_head is None or self.sent_at_head > self.size // 2


def json_body(size: int) -> Iterator[bytes]:
    """A ``size``-byte JSON session request, one MiB at a time (padding in an extra field)."""
    head, tail = b'{"mode":"broadcast","pad":"', b'"}'
    yield head
    left = size - len(head) - len(tail)
    while left > 0:
        yield CHUNK[:left]
        left -= len(CHUNK)
    yield tail


def multipart_body(size: int, boundary: str) -> Iterator[bytes]:
    """A ``size``-byte multipart upload: consent, then an "image" of filler."""
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"consent\"\r\n\r\ntrue\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"huge.png\"\r\nContent-Type: image/png\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    yield head
    left = size - len(head) - len(tail)
    while left > 0:
        yield CHUNK[:left]
        left -= len(CHUNK)
    yield tail


def parse_head(buf: bytes) -> tuple[int, dict[str, str], int] | None:
    """Status, headers and where the body starts, once the whole head has arrived."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in
               (line.split(":", 1) for line in lines[1:] if ":" in line)}
    return status, headers, end + 4


def dechunk(data: bytes) -> bytes | None:
    """A chunked body decoded, or None while it is incomplete."""
    out, pos = b"", 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return None
        n = int(data[pos:end].split(b";")[0] or b"0", 16)
        if n == 0:
            return out
        if len(data) < end + 2 + n:
            return None
        out += data[end + 2:end + 2 + n]
        pos = end + 4 + n


async def read_response(sock: socket.socket, on_head: Callable[[], None]
                        ) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response from a raw socket (``on_head`` called as its head arrives). A server
    that answers while the client is still sending closes on unread data, which resets the
    connection: the kernel still hands over what arrived before the reset (asyncio's streams
    would raise and drop it), so read on."""
    loop = asyncio.get_running_loop()
    buf, parsed = b"", None
    while True:
        try:
            data = await loop.sock_recv(sock, 65536)
        except ConnectionError:
            data = b""
        buf += data
        if parsed is None and (parsed := parse_head(buf)) is not None:
            on_head()
        if parsed is not None:
            status, headers, start = parsed
            rest = buf[start:]
            if "content-length" in headers and len(rest) >= int(headers["content-length"]):
                return status, headers, rest[:int(headers["content-length"])]
            if headers.get("transfer-encoding") == "chunked" and (b := dechunk(rest)) is not None:
                return status, headers, b
            if not data:
                return status, headers, rest  # closed: what came is the answer
        if not data:
            raise ConnectionError("connection closed before any response")


async def hostile_request(port: int, method: str, path: str, headers: dict[str, str],
                          body: Iterator[bytes], size: int, chunked: bool = False,
                          limit_s: float = 20.0) -> RawResponse:
    """Stream a huge ``size``-byte body (``chunked``: no Content-Length) while reading the
    response concurrently; stop sending as soon as the answer is in."""
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    sock = socket.socket()
    sock.setblocking(False)
    framing = {"transfer-encoding": "chunked"} if chunked else {"content-length": str(size)}
    head = "".join(f"{k}: {v}\r\n" for k, v in
                   {"host": f"127.0.0.1:{port}", **headers, **framing}.items())
    sent = 0
    at_head: list[tuple[float, int]] = []

    async def send() -> None:
        nonlocal sent
        with contextlib.suppress(OSError):  # the server may close on us: that is fine
            await loop.sock_sendall(sock, f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode())
            for chunk in body:
                await loop.sock_sendall(
                    sock, b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                sent += len(chunk)
            if chunked:
                await loop.sock_sendall(sock, b"0\r\n\r\n")

    def on_head() -> None:
        at_head.append((time.monotonic() - t0, sent))

    sender: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 5)
        sender = asyncio.create_task(send())
        status, rh, content = await asyncio.wait_for(read_response(sock, on_head), limit_s)
    except TimeoutError:
        return RawResponse(None, "", b"", None, None, size,
                           f"no response within {limit_s:.0f} s ({sent / 1e6:.0f} MB sent)")
    except ConnectionError as exc:
        return RawResponse(None, "", b"", None, None, size, f"{exc} ({sent / 1e6:.0f} MB sent)")
    finally:
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
        sock.close()
    seconds, sent_at_head = at_head[0]
    return RawResponse(status, rh.get("content-type", ""), content, seconds, sent_at_head,
                       size, "")


def fast_error(r: RawResponse, status: int, code: str) -> Outcome:
    """The documented error, and before the body: answered fast, with most of the body still
    unsent (a server that spools the body to disk first can be fast and flat in memory, yet
    it read everything)."""
    ok = (r.status == status and error_code(r.body) == code and r.seconds is not None
          and r.seconds < FAST_S and not r.read_first
          and r.content_type.startswith("application/json"))
    note = "; the server read the body first" if r.status is not None and r.read_first else ""
    return Outcome(ok, r.summary() + note)


# ------------------------------------------------------------------ media


async def make_offer(kinds: str) -> str:
    """A real aiortc recvonly offer ("av": audio + video, "v": video only), its candidates
    stripped: the probe talks to 127.0.0.1 only, and an offer needs no candidates to be
    answered. No STUN server (aiortc's default would query one on the internet)."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        if "a" in kinds:
            pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
    finally:
        await pc.close()
    lines = [ln for ln in sdp.split("\r\n")
             if not ln.startswith(("a=candidate:", "a=end-of-candidates"))]
    return "\r\n".join(lines)


def without_codecs(sdp: str) -> str:
    """The offer with every codec gone: no rtpmap/fmtp/rtcp-fb, no payload types in m=."""
    out = []
    for ln in sdp.split("\r\n"):
        if ln.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")):
            continue
        out.append(" ".join(ln.split(" ")[:3]) if ln.startswith("m=") else ln)
    return "\r\n".join(out)


def with_bad_candidate(sdp: str) -> str:
    """The offer with a malformed ``a=candidate:`` line in its first media section."""
    lines = sdp.split("\r\n")
    at = next(i for i, ln in enumerate(lines) if ln.startswith("a=mid:"))
    lines.insert(at + 1, "a=candidate:bogus 1 udp not-a-priority 999.1.1.1 x typ nothing")
    return "\r\n".join(lines)


def new_face_png() -> bytes:
    """A portrait the server has never seen (so its renderer is cold): the default avatar,
    mirrored, a few pixels changed at random."""
    import numpy as np
    from PIL import Image
    from skimage import data

    img = np.ascontiguousarray(data.astronaut()[:, ::-1])  # type: ignore[no-untyped-call]
    rng = np.random.default_rng(secrets.randbits(32))
    img[:4, :4] = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(side: int = 13000) -> bytes:
    """A ``side``² black PNG (169 MP, a few hundred KB on the wire), built once and cached in
    the temp dir: what it decodes to, not what it weighs, is the attack."""
    path = Path(tempfile.gettempdir()) / f"vivify-fuzz-{side}.png"
    if not path.exists():
        from PIL import Image

        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        Image.new("1", (side, side)).save(tmp, format="PNG", optimize=True)
        os.replace(tmp, path)
    return path.read_bytes()


# ============================================================================ the cases
# 1. Controls: every number finite and in range, at the API edge.


def controls_case(name: str, text: str) -> Case:
    """A case that sends one hostile controls message (the literal JSON text ``text``)."""

    async def run(p: Probe) -> Outcome:
        return await expect_ws_error(p, text)

    return Case(name, run, f"send {text}: a bad_message error, the server stays up")


# 2. WebSocket frames: bounded depth and size.


async def ws_nested_json(p: Probe) -> Outcome:
    """60 000 nested arrays in 60 KB (under the size cap): a RecursionError once dropped the
    socket without a close frame."""
    return await expect_ws_error(p, "[" * 60_000)


async def ws_nested_json_100k(p: Probe) -> Outcome:
    """The issue's ``"[" * 100000`` (also over 64 KiB, so a 1009 close is fine too)."""
    return await expect_ws_error(p, "[" * 100_000, close_codes=(1009,))


async def ws_oversize_text(p: Probe) -> Outcome:
    """A well-formed controls message padded past 64 KiB."""
    text = json.dumps({"type": "controls", "emotion": "happy", "pad": "x" * 70_000})
    return await expect_ws_error(p, text, close_codes=(1009,))


# 3. WebSocket auth: a handshake, then the documented close code.


def wrong_token(p: Probe) -> str:
    """A wrong token unique to this run, so the log check can look for it too."""
    return "wrong-" + p.token[-8:]


async def ws_wrong_token(p: Probe) -> Outcome:
    """A wrong token in the query: close 4401 (an HTTP 403 is unreadable to a browser)."""
    sid = await p.create_broadcast()
    try:
        res = await ws_close_code(p.ws_url(sid, wrong_token(p)))
    finally:
        await p.delete(sid)
    return Outcome(res.close_code == 4401, res.note)


async def ws_auth_header(p: Probe) -> Outcome:
    """``Authorization`` is parsed as ``Bearer <token>``: a right token under another scheme
    (the old check dropped any first 7 characters) is refused with 4401; the right one works."""
    sid = await p.create_broadcast()
    try:
        other = await ws_close_code(p.ws_url(sid), {"authorization": f"Token: {p.token}"})
        async with ws_connect(p.ws_url(sid), p.auth) as ws:
            await ws.send(json.dumps({"type": "stats"}))
            good = await wait_event(ws, lambda e: e.get("type") == "stats", 3.0)
    except websockets.InvalidStatus as exc:
        return Outcome(False, f"Bearer header refused with HTTP {exc.response.status_code}")
    finally:
        await p.delete(sid)
    ok = other.close_code == 4401 and good.event is not None
    return Outcome(ok, f"'Token: <token>': {other.note}; 'Bearer <token>': {good.note}")


async def ws_unknown_session(p: Probe) -> Outcome:
    """The right token, a session that does not exist: close 4404."""
    res = await ws_close_code(p.ws_url("0" * 32, p.token))
    return Outcome(res.close_code == 4404, res.note)


# 4. HTTP bodies: auth before body, sizes capped before reading.


async def body_json_no_token(p: Probe) -> Outcome:
    """A 300 MB JSON without a token: 401 at once, nothing buffered (it was parsed whole)."""
    size = p.body_mb(300)
    r = await hostile_request(p.server.port, "POST", "/v1/sessions",
                              {"content-type": "application/json"}, json_body(size), size)
    p.track(r.status or 0, r.body)
    return fast_error(r, 401, "unauthorized")


async def body_json_no_token_x4(p: Probe) -> Outcome:
    """Four of them at once (once 2 GB of RSS)."""
    size = p.body_mb(300)
    rs = await asyncio.gather(*(
        hostile_request(p.server.port, "POST", "/v1/sessions",
                        {"content-type": "application/json"}, json_body(size), size)
        for _ in range(4)))
    outcomes = [fast_error(r, 401, "unauthorized") for r in rs]
    for r in rs:
        p.track(r.status or 0, r.body)
    return Outcome(all(o.passed for o in outcomes), "; ".join(o.observed for o in outcomes))


async def body_multipart_no_token(p: Probe) -> Outcome:
    """A 500 MB multipart upload without a token (once spooled to disk whole before the 401)."""
    size, boundary = p.body_mb(500), "fuzz" + secrets.token_hex(8)
    r = await hostile_request(p.server.port, "POST", "/v1/avatars",
                              {"content-type": f"multipart/form-data; boundary={boundary}"},
                              multipart_body(size, boundary), size)
    return fast_error(r, 401, "unauthorized")


async def body_json_too_large(p: Probe) -> Outcome:
    """With the token, a 300 MB JSON declared in Content-Length: 413 before reading."""
    size = p.body_mb(300)
    r = await hostile_request(p.server.port, "POST", "/v1/sessions",
                              {"content-type": "application/json", **p.auth},
                              json_body(size), size)
    p.track(r.status or 0, r.body)
    return fast_error(r, 413, "too_large")


async def body_json_too_large_chunked(p: Probe) -> Outcome:
    """The same, chunked with no Content-Length: the streamed size is what is capped."""
    size = p.body_mb(300)
    r = await hostile_request(p.server.port, "POST", "/v1/sessions",
                              {"content-type": "application/json", **p.auth},
                              json_body(size), size, chunked=True)
    p.track(r.status or 0, r.body)
    return fast_error(r, 413, "too_large")


# 5. Admission: one reservation before any await.


async def admission_burst_cold_avatar(p: Probe) -> Outcome:
    """Upload a new portrait, then 30 concurrent creates while its renderer is still loading:
    at most --max-sessions admitted, the rest 503 server_full (once all 30 got in)."""
    async with p.client(timeout=60) as c:
        up = await c.post("/v1/avatars", files={"image": ("face.png", new_face_png(),
                                                           "image/png")},
                          data={"consent": "true", "consent_by": "probe"})
        if up.status_code != 201:
            return Outcome(False, f"upload: {describe(up)}")
        avatar = up.json()["id"]
        body = {"avatar": avatar, "mode": "broadcast"}
        rs = await asyncio.gather(*(p.create(body, c=c) for _ in range(30)),
                                  return_exceptions=True)
        await p.cleanup()
        with contextlib.suppress(httpx.HTTPError):
            await c.delete(f"/v1/avatars/{avatar}")
    tally = Counter(f"{r.status_code} {error_code(r.content) or ''}".strip()
                    if isinstance(r, httpx.Response) else type(r).__name__ for r in rs)
    admitted = sum(1 for r in rs if isinstance(r, httpx.Response) and r.status_code == 201)
    refused = tally["503 server_full"]
    ok = 1 <= admitted <= MAX_SESSIONS and admitted + refused == len(rs)
    return Outcome(ok, f"{admitted} admitted; " + ", ".join(f"{n}× {k}" for k, n in
                                                            tally.most_common()))


# 6. Idle sessions end.


async def idle_broadcast_ends(p: Probe) -> Outcome:
    """A broadcast with no peer and no WebSocket ends by itself (one once rendered 650 s)."""
    t0 = time.monotonic()
    sid = await p.create_broadcast()
    limit = IDLE_TIMEOUT_S + IDLE_GRACE_S
    async with p.client() as c:
        while (waited := time.monotonic() - t0) < limit:
            if (await c.get(f"/v1/sessions/{sid}")).status_code == 404:
                p.open_sessions.discard(sid)
                return Outcome(True, f"ended after {waited:.1f} s")
            await asyncio.sleep(0.25)
    return Outcome(False, f"still live after {limit:.0f} s")


async def idle_websocket_told(p: Probe) -> Outcome:
    """The same with a silent WebSocket open: it is told (``session_closed``) why it ends."""
    t0 = time.monotonic()
    async with ws_session(p) as (_, ws):
        res = await wait_event(ws, lambda e: e.get("code") == "session_closed",
                               IDLE_TIMEOUT_S + IDLE_GRACE_S)
    waited = time.monotonic() - t0
    if res.event is not None:
        return Outcome(True, f"session_closed after {waited:.1f} s: {res.event.get('message')}")
    return Outcome(False, res.note)


# 7. SDP: 400 bad_sdp as JSON, never a text/plain 500.


async def sdp_case(p: Probe, mode: str, sdp: str) -> httpx.Response:
    return await p.create({"mode": mode, "offer": {"type": "offer", "sdp": sdp}})


async def sdp_truncated(p: Probe) -> Outcome:
    """A real offer cut in half."""
    sdp = await p.offer("av")
    return expect_error(await sdp_case(p, "mirror", sdp[:len(sdp) // 2]), 400, "bad_sdp")


async def sdp_no_codecs(p: Probe) -> Outcome:
    """A real offer with no codecs left in it."""
    sdp = without_codecs(await p.offer("av"))
    return expect_error(await sdp_case(p, "mirror", sdp), 400, "bad_sdp")


async def sdp_bad_candidate(p: Probe) -> Outcome:
    """A real offer with a malformed candidate line."""
    sdp = with_bad_candidate(await p.offer("av"))
    return expect_error(await sdp_case(p, "mirror", sdp), 400, "bad_sdp")


async def sdp_video_only_broadcast(p: Probe) -> Outcome:
    """A valid video-only recvonly offer for a broadcast: answered (a viewer needs no mic)."""
    r = await sdp_case(p, "broadcast", await p.offer("v"))
    answer = (parse_json(r.content) or {}).get("answer") or {}
    ok = r.status_code == 201 and "m=video" in str(answer.get("sdp", ""))
    return Outcome(ok, "201 with a video answer" if ok else describe(r))


async def sdp_video_only_mirror(p: Probe) -> Outcome:
    """The same offer for a mirror session: refused clearly (mirror needs the microphone)."""
    return expect_error(await sdp_case(p, "mirror", await p.offer("v")), 400, "bad_sdp")


# 8. /v1/verify: the upload image limits.


async def verify_pixel_bomb(p: Probe) -> Outcome:
    """A 13000² PNG: 413 image_too_large, memory kept flat (it once peaked at 2 GB and kept
    500–770 MB)."""
    png = bomb_png()
    async with p.client(timeout=60) as c:
        r = await c.post("/v1/verify", files={"file": ("bomb.png", png, "image/png")})
    out = expect_error(r, 413, "image_too_large")
    return Outcome(out.passed, f"{out.observed} ({len(png) / 1e3:.0f} KB PNG)")


# 10. Origin: no state change from a foreign page.


async def origin_foreign(p: Probe) -> Outcome:
    """A create carrying a foreign ``Origin`` (with the token): 403 forbidden_origin."""
    return expect_error(await p.create({"mode": "broadcast"},
                                       headers={"origin": "http://evil.example"}),
                        403, "forbidden_origin")


async def origin_own(p: Probe) -> Outcome:
    """The server's own origin is of course allowed."""
    r = await p.create({"mode": "broadcast"}, headers={"origin": p.server.url})
    return Outcome(r.status_code == 201, describe(r) if r.status_code != 201 else "201")


# 12. Memory at the end.


async def final_rss(p: Probe) -> Outcome:
    """After every case, RSS within 20 MB of the baseline taken after the warm-up session
    (a second look after 2 s more, RSS being noisy)."""
    await asyncio.sleep(SETTLE_S)
    now = p.server.rss()
    if now is not None and p.baseline_rss is not None and now - p.baseline_rss >= RSS_SLACK_MIB:
        await asyncio.sleep(2.0)
        now = min(now, p.server.rss() or now)
    if now is None or p.baseline_rss is None:
        return Outcome(False, "no RSS to compare")
    grew = now - p.baseline_rss
    return Outcome(grew < RSS_SLACK_MIB, f"{now:.0f} MiB vs baseline {p.baseline_rss:.0f} MiB "
                                         f"({grew:+.0f})")


# 11. SIGTERM: the WebSocket is told, then closed with 1012; exit 0.


async def sigterm_drains(p: Probe) -> Outcome:
    """SIGTERM with a WebSocket open: ``session_closed`` before the 1012 close, exit 0."""
    assert p.server.proc is not None
    sid = await p.create_broadcast()
    async with ws_connect(p.ws_url(sid, p.token)) as ws:
        await asyncio.sleep(0.3)
        p.server.proc.send_signal(signal.SIGTERM)
        told = await wait_event(ws, lambda e: e.get("code") == "session_closed", 10.0)
        end = await wait_event(ws, lambda e: False, 10.0) if told.event else told
    p.open_sessions.discard(sid)
    try:
        rc = await asyncio.to_thread(p.server.proc.wait, 15)
    except subprocess.TimeoutExpired:
        rc = None
    ok = told.event is not None and end.close_code == 1012 and rc == 0
    first = "session_closed, then" if told.event else "no session_closed:"
    return Outcome(ok, f"{first} {end.note}; exit code {rc}")


# 9. The log: no secrets.


async def log_has_no_token(p: Probe) -> Outcome:
    """The whole server log (read after exit) holds neither the token nor the wrong token the
    probe tried: query strings are redacted in access logs."""
    text, wrong = p.server.log_text(), wrong_token(p)
    secrets_seen = {"token": text.count(p.token), "wrong token": text.count(wrong)}
    if not any(secrets_seen.values()):
        return Outcome(True, f"{len(text.splitlines())} log lines, no token")
    line = next(ln for ln in text.splitlines() if p.token in ln or wrong in ln)
    shown = line.replace(p.token, "<TOKEN>")[:140]
    return Outcome(False, ", ".join(f"{k} ×{n}" for k, n in secrets_seen.items()) +
                   f", e.g. {shown}")


CASES: list[Case] = [
    controls_case("ws_gaze_nan", '{"type":"controls","gaze":[NaN,0]}'),
    controls_case("ws_gaze_infinity", '{"type":"controls","gaze":[Infinity,0]}'),
    controls_case("ws_gaze_1e300", '{"type":"controls","gaze":[1e300,-1e300]}'),
    controls_case("ws_distance_infinity", '{"type":"controls","distance":Infinity}'),
    controls_case("ws_intensity_negative", '{"type":"controls","intensity":-5}'),
    Case("ws_nested_json", ws_nested_json, "60 000 nested arrays: bad_message"),
    Case("ws_nested_json_100k", ws_nested_json_100k, '"[" * 100000: bad_message or 1009'),
    Case("ws_oversize_text", ws_oversize_text, "a 70 KB text frame: bad_message or 1009"),
    Case("ws_wrong_token", ws_wrong_token, "wrong token: close 4401"),
    Case("ws_auth_header", ws_auth_header, "Authorization parsed as Bearer"),
    Case("ws_unknown_session", ws_unknown_session, "unknown session: close 4404"),
    Case("body_json_no_token", body_json_no_token, "300 MB JSON, no token: fast 401",
         timeout_s=30, memory="peak"),
    Case("body_json_no_token_x4", body_json_no_token_x4, "4 × 300 MB at once: fast 401s",
         timeout_s=45, memory="peak"),
    Case("body_multipart_no_token", body_multipart_no_token, "500 MB multipart: fast 401",
         timeout_s=30, memory="peak"),
    Case("body_json_too_large", body_json_too_large, "300 MB JSON with token: fast 413",
         timeout_s=30, memory="after"),
    Case("body_json_too_large_chunked", body_json_too_large_chunked,
         "300 MB chunked JSON with token: fast 413", timeout_s=30, memory="after"),
    Case("admission_burst_cold_avatar", admission_burst_cold_avatar,
         f"30 creates on a cold avatar: ≤ {MAX_SESSIONS} admitted", timeout_s=60),
    Case("idle_broadcast_ends", idle_broadcast_ends, "idle broadcast ends by itself"),
    Case("idle_websocket_told", idle_websocket_told, "idle: the WebSocket gets session_closed"),
    Case("sdp_truncated", sdp_truncated, "truncated offer: 400 bad_sdp"),
    Case("sdp_no_codecs", sdp_no_codecs, "offer without codecs: 400 bad_sdp"),
    Case("sdp_bad_candidate", sdp_bad_candidate, "bad candidate line: 400 bad_sdp"),
    Case("sdp_video_only_broadcast", sdp_video_only_broadcast, "video-only broadcast: 201"),
    Case("sdp_video_only_mirror", sdp_video_only_mirror, "video-only mirror: 400 bad_sdp"),
    Case("verify_pixel_bomb", verify_pixel_bomb, "13000² PNG to /v1/verify: 413, flat RSS",
         timeout_s=45, memory="after"),
    Case("origin_foreign", origin_foreign, "foreign Origin: 403 forbidden_origin"),
    Case("origin_own", origin_own, "own Origin: allowed"),
    Case("final_rss", final_rss, "RSS back within 20 MB of the baseline"),
    Case("sigterm_drains", sigterm_drains, "SIGTERM: session_closed, 1012, exit 0",
         timeout_s=40, check_up=False),
    Case("log_has_no_token", log_has_no_token, "no token in the log", check_up=False),
]


# ============================================================================ running


def memory_verdict(case: Case, before: float | None, after: float | None,
                   peak: float | None) -> str | None:
    """Why the case's memory bar failed, or None when it held (or has none)."""
    if case.memory is None or before is None:
        return None
    value = peak if case.memory == "peak" else after
    if value is None:
        return None
    grew = value - before
    if grew < RSS_SLACK_MIB:
        return None
    return f"RSS {case.memory} +{grew:.0f} MiB ({before:.0f} → {value:.0f})"


async def recover(p: Probe) -> str | None:
    """After a case: is the server still up? If not, say how it ended and start a new one,
    so the remaining cases still see a server."""
    if await p.healthy():
        return None
    proc = p.server.proc
    rc = proc.poll() if proc is not None else None
    why = f"server DIED (rc {rc})" if rc is not None else "server alive but /healthz silent"
    p.server.kill()
    p.open_sessions.clear()
    await asyncio.to_thread(p.server.start)
    p.restarts += 1
    await p.warm_up()
    return f"{why}; restarted"


async def run_case(p: Probe, case: Case) -> CaseResult:
    """One case under its time limit, with its RSS before/after/peak and the up-check."""
    if case.memory:
        await asyncio.sleep(SETTLE_S)
    before = p.server.rss()
    t0 = time.monotonic()
    with RssSampler(p.server.pid) as sampler:
        try:
            outcome = await asyncio.wait_for(case.run(p), case.timeout_s)
        except TimeoutError:
            outcome = Outcome(False, f"no verdict within {case.timeout_s:.0f} s")
        except Exception as exc:  # a probe-side error is a failed case, not a dead probe
            outcome = Outcome(False, f"probe error: {type(exc).__name__}: {exc}"[:300])
        with contextlib.suppress(Exception):
            await asyncio.wait_for(p.cleanup(), 15)
        if case.memory == "after":
            await asyncio.sleep(SETTLE_S)
        after = p.server.rss()
    seconds = time.monotonic() - t0
    notes = [memory_verdict(case, before, after, sampler.peak)]
    if case.check_up:
        notes.append(await recover(p))
    problems = [n for n in notes if n]
    observed = "; ".join([outcome.observed.replace(p.token, "<TOKEN>"), *problems])
    return CaseResult(case.name, outcome.passed and not problems, observed, before, after,
                      sampler.peak, round(seconds, 2))


def print_result(r: CaseResult) -> None:
    rss = f"rss {r.rss_before_mib}→{r.rss_after_mib} MiB (peak {r.rss_peak_mib})"
    print(f"{'PASS' if r.passed else 'FAIL'} {r.name:<28} {r.observed}  [{rss}, "
          f"{r.seconds:.1f} s]", flush=True)


async def run_cases(server: ServerProcess, quick: bool) -> tuple[Probe, list[CaseResult]]:
    probe = Probe(server, quick)
    await probe.warm_up()
    print(f"fuzz: server pid {server.pid} on {server.url}, baseline RSS "
          f"{probe.baseline_rss} MiB", flush=True)
    results: list[CaseResult] = []
    for case in CASES:
        try:
            result = await run_case(probe, case)
        except RuntimeError as exc:  # the server could not be restarted: nothing left to probe
            result = CaseResult(case.name, False, f"no server: {exc}"[:300], None, None, None, 0)
        results.append(result)
        print_result(result)
    return probe, results


def run_probe(out: Path | None = DEFAULT_OUT, quick: bool = False,
              models_root: Path | None = None) -> dict[str, Any]:
    """Start the server, run every case, stop it; the report (also written to ``out`` with the
    server log beside it, unless ``out`` is None). ``models_root``: the face models' cache
    folder (default: vivify.engines.avatar.model_store.default_cache_dir())."""
    from vivify.engines.avatar.model_store import default_cache_dir

    t0 = time.monotonic()
    models = (models_root or default_cache_dir()).resolve()
    token = "fuzz-" + secrets.token_urlsafe(18)
    with tempfile.TemporaryDirectory(prefix="vivify-fuzz-") as tmp:
        home = Path(tmp)
        (home / "models").symlink_to(models)
        server = ServerProcess(home, token)
        try:
            server.start()
            probe, results = asyncio.run(run_cases(server, quick))
        finally:
            server.kill()
        log = server.log_text()
    failed = [r for r in results if not r.passed]
    report = {
        "quick": quick, "seconds": round(time.monotonic() - t0, 1),
        "passed": len(results) - len(failed), "failed": len(failed),
        "server": {"command": server.redacted_command(), "dropped_flags": server.dropped_flags,
                   "starts": server.starts, "restarts": probe.restarts,
                   "baseline_rss_mib": probe.baseline_rss},
        "cases": [asdict(r) | {"why": c.why} for r, c in zip(results, CASES, strict=True)],
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".log").write_text(log.replace(token, "<TOKEN>"))
    if server.dropped_flags:
        print(f"fuzz: this server rejected {' '.join(server.dropped_flags)}; ran without it")
    print(f"fuzz: {report['passed']} passed, {report['failed']} failed")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    parser.add_argument("--quick", action="store_true", help="smaller hostile bodies")
    args = parser.parse_args(argv)
    return 1 if run_probe(args.out, args.quick)["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
