"""Raw HTTP for the hostile-body cases: a huge body streamed from a socket while the answer is
read concurrently, so the probe sees *when* the server answered and how much it had read."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bench.fuzz.probe import CHUNK, FAST_S, Outcome, describe_parts, error_code


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
    return padded(b'{"mode":"broadcast","pad":"', b'"}', size)


def multipart_body(size: int, boundary: str) -> Iterator[bytes]:
    """A ``size``-byte multipart upload: consent, then an "image" of filler."""
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"consent\"\r\n\r\ntrue\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"huge.png\"\r\nContent-Type: image/png\r\n\r\n").encode()
    return padded(head, f"\r\n--{boundary}--\r\n".encode(), size)


def padded(head: bytes, tail: bytes, size: int) -> Iterator[bytes]:
    """``head``, filler, ``tail``: ``size`` bytes in all, the filler one MiB at a time."""
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

