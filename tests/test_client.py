"""The Python API client (streamer/client) against the real FastAPI app, in-process through
``httpx.ASGITransport`` (no network, no server thread), plus a fake transport for the wire
shapes the app itself never sends. The full WebRTC path is test_server's: it uses this client.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from vivify.streamer.client import ApiClient, ClientError, ServerUnreachable, offer_peer
from vivify.streamer.server.config import ServerConfig
from vivify.streamer.server.serve import build

TOKEN = "client-token"


@asynccontextmanager
async def _app_client(home: Path, token: str | None = TOKEN, *, lifespan: bool = False
                      ) -> AsyncIterator[ApiClient]:
    """An :class:`ApiClient` wired to a fresh app; ``lifespan`` starts it (default avatar,
    scheduler) like uvicorn does, for calls that make sessions."""
    app, _ = build(ServerConfig(token=TOKEN, max_sessions=2), home=home)
    transport = httpx.ASGITransport(app=app)
    async with ApiClient("http://vivify.test", token, transport=transport) as api:
        if lifespan:
            async with app.router.lifespan_context(app):
                yield api
        else:
            yield api


def _fake(handler: Callable[[httpx.Request], httpx.Response]) -> ApiClient:
    return ApiClient("http://fake.test/", "t", transport=httpx.MockTransport(handler))


def test_health_and_errors_from_the_real_app(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _app_client(tmp_path) as api:
            assert (await api.health())["status"] == "ok"
            with pytest.raises(ClientError) as e:
                await api.session_stats("nope")
            assert (e.value.status, e.value.code) == (404, "unknown_session")
            with pytest.raises(ClientError) as e:
                await api.create_session(None, {"mode": "sideways"})
            assert (e.value.status, e.value.code) == (422, "invalid_request")
            assert str(e.value).startswith("422 invalid_request: ")
            assert await api.delete_session("nope") is False  # already gone is not an error
        async with _app_client(tmp_path, token="wrong") as api:
            with pytest.raises(ClientError) as e:
                await api.session_stats("nope")
            assert (e.value.status, e.value.code) == (401, "unauthorized")

    asyncio.run(scenario())


@pytest.mark.slow
def test_broadcast_session_lifecycle_in_process(face_models: Path, tmp_path: Path) -> None:
    """Create (no offer: a WebSocket-driven broadcast), stats, delete; ``server_full`` past the
    limit, with its ``Retry-After``."""
    async def scenario() -> None:
        async with _app_client(tmp_path, lifespan=True) as api:
            ids = [(await api.create_session(None, {"mode": "broadcast"}))["id"]
                   for _ in range(2)]
            with pytest.raises(ClientError) as e:
                await api.create_session(None, {"mode": "broadcast"})
            assert (e.value.status, e.value.code) == (503, "server_full")
            assert e.value.retry_after
            stats = await api.session_stats(ids[0])
            assert stats["mode"] == "broadcast" and stats["provenance"]["watermark"]
            for sid in ids:
                assert await api.delete_session(sid) is True
            assert await api.delete_session(ids[0]) is False

    asyncio.run(scenario())


@pytest.mark.slow
def test_offer_is_made_posted_and_answered(face_models: Path, tmp_path: Path) -> None:
    """``create_session`` makes the offer of an ``offer_peer`` and applies the answer; a mirror
    offer without a microphone is refused before anything is sent."""
    async def scenario() -> None:
        async with _app_client(tmp_path, lifespan=True) as api:
            pc = offer_peer("broadcast")
            try:
                data = await api.create_session(pc, {"mode": "broadcast"})
                assert pc.remoteDescription is not None
                assert pc.remoteDescription.type == "answer" and "m=video" in data["answer"]["sdp"]
                viewer = offer_peer("viewer")
                got = await api.add_viewer(data["id"], viewer)
                assert got["viewer"] and viewer.remoteDescription is not None
                await viewer.close()
                assert await api.delete_session(data["id"])
            finally:
                await pc.close()

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="audio_track"):
        offer_peer("mirror")
    with pytest.raises(ValueError, match="mode must be"):
        offer_peer("sideways")


def test_error_bodies_that_are_not_the_apis() -> None:
    """A proxy's HTML page or an empty body still becomes a ClientError with the status."""
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer t"
        if request.url.path == "/healthz":
            return httpx.Response(502, text="<html>Bad Gateway</html>")
        return httpx.Response(500)

    async def scenario() -> None:
        async with _fake(handler) as api:
            with pytest.raises(ClientError) as e:
                await api.health()
            assert (e.value.status, e.value.code) == (502, "http_error")
            assert "Bad Gateway" in e.value.message
            with pytest.raises(ClientError) as e:
                await api.session_stats("x")
            assert (e.value.status, e.value.message) == (500, "Internal Server Error")

    asyncio.run(scenario())


def test_avatar_upload_sends_consent_and_points() -> None:
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["body"] = request.content
        return httpx.Response(201, json={"id": "abc"})

    async def scenario() -> dict[str, Any]:
        async with _fake(handler) as api:
            return await api.upload_avatar(b"PNG", consent_by="Me",
                                           points={"nose": [1, 2]})

    assert asyncio.run(scenario()) == {"id": "abc"}
    body = seen["body"].decode()
    assert 'name="consent"\r\n\r\ntrue' in body and 'name="consent_by"\r\n\r\nMe' in body
    assert json.dumps({"nose": [1, 2]}) in body and 'filename="portrait.png"' in body


def test_nothing_listening_is_a_readable_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused

        async def scenario() -> None:
            async with ApiClient(url) as api:
                with pytest.raises(ServerUnreachable) as e:
                    await api.health()
                assert e.value.status == 0
                assert str(e.value).startswith(f"cannot reach the Vivify server at {url} (")
                with pytest.raises(ClientError, match="cannot open the session WebSocket"):
                    await api.open_websocket("abc")

        asyncio.run(scenario())


def test_websocket_url_follows_the_scheme() -> None:
    assert ApiClient("https://h:1/base/").websocket_url("s") == "wss://h:1/base/v1/sessions/s/ws"
    assert ApiClient("http://h").websocket_url("s") == "ws://h/v1/sessions/s/ws"
