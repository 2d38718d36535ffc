"""The API's routes on the real app (streamer/server/app.py + routes/), in process: a real
AvatarStore with a stand-in preparer, a small in-memory session manager, no engines and no
WebRTC. Status codes, error bodies, auth, body limits, 404s, the WebSocket and its refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from tests.test_avatar_store import FakePreparer, FakeRenderer
from vivify.engines.audio.espeak import VoiceFailed, VoiceUnavailable
from vivify.engines.errors import NoFaceError
from vivify.streamer.server import avatars as avatars_module
from vivify.streamer.server.app import MAX_SESSION_BODY, create_app
from vivify.streamer.server.avatars import AvatarStore
from vivify.streamer.server.config import ServerConfig
from vivify.streamer.server.errors import Full, NotFound
from vivify.streamer.server.routes import sessions as session_routes
from vivify.streamer.server.routes.websocket import MAX_OUTBOX, MAX_WS_BINARY

TOKEN = "route-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MAX_UPLOAD = 4096
OFFER = {"type": "offer", "sdp": "v=0 (not parsed by the stand-in manager)"}


class FakeMedia:
    def __init__(self, session: FakeSession) -> None:
        self.session = session
        self.controls = SimpleNamespace(emotion="neutral", intensity=1.0, gaze=(0.0, 0.0),
                                        distance=0.0)
        self.pushed: list[np.ndarray] = []
        self.calls: list[str] = []
        self.full = False
        self.stats = SimpleNamespace(late_slots=2, dropped_pairs=1)

    def push_audio(self, audio: np.ndarray) -> None:
        if self.full:
            raise OverflowError("more than 120 s of audio queued")
        self.pushed.append(audio)

    def segment_end(self) -> None:
        self.calls.append("segment_end")

    def interrupt(self) -> None:
        self.calls.append("interrupt")
        if self.session.flood:  # a burst of events the client does not read
            for _ in range(MAX_OUTBOX + 1):
                self.session.emit({"type": "playback_started"})


class FakeSession:
    """What the routes use of a Session (streamer/server/session.py)."""

    def __init__(self, manager: FakeManager, avatar: str, mode: str, video: Any) -> None:
        self.manager = manager
        self.id = f"s{len(manager.sessions) + 1}"
        self.avatar, self.mode, self.video = avatar, mode, video
        self.media = FakeMedia(self)
        self.sockets: set[Callable[[dict[str, Any]], None]] = set()
        self.viewers: dict[str, Any] = {}
        self.closed = False
        self.touched = 0
        self.flood = False
        self.sfu: Any = None  # no --sfu-url in these tests

    def emit(self, event: dict[str, Any]) -> None:
        for send in list(self.sockets):
            send(event)

    def touch(self) -> None:
        self.touched += 1

    def provenance(self) -> dict[str, Any]:
        return {"watermark": "0123abcd", "label": "AI-generated"}

    def stats(self) -> dict[str, Any]:
        return {"mode": self.mode, "avatar": self.avatar, "viewers": len(self.viewers)}

    async def add_viewer(self, offer: dict[str, str]) -> tuple[str, dict[str, str]]:
        viewer = f"v{len(self.viewers) + 1}"
        self.viewers[viewer] = offer
        return viewer, {"type": "answer", "sdp": "viewer answer"}

    async def aclose(self, reason: str = "closed") -> None:
        self.closed = True
        self.manager.sessions.pop(self.id, None)
        self.emit({"type": "error", "code": "session_closed", "message": reason})


class FakeManager:
    """What the routes use of the SessionManager (streamer/server/manager.py)."""

    def __init__(self, avatars: AvatarStore) -> None:
        self.config = ServerConfig()
        self.avatars = avatars
        self.sessions: dict[str, FakeSession] = {}
        self.capacity = 2
        self.batcher = self.render_batcher = self.graph = None
        self.graph_fallbacks = 0
        self.scheduler = SimpleNamespace(queued=0, busy_seconds=1.5)
        self.created_total = 0
        self.shutting_down = False
        self.garbage_collections = 0
        self.created: list[dict[str, Any]] = []

    async def create(self, avatar: str, mode: str, video: Any, offer: dict[str, str] | None,
                     label: bool | None = None) -> tuple[FakeSession, dict[str, str] | None]:
        if len(self.sessions) >= self.capacity:
            raise Full("the server is full", headers={"Retry-After": "10"})
        session = FakeSession(self, avatar, mode, video)
        self.sessions[session.id] = session
        self.created_total += 1
        self.created.append({"avatar": avatar, "mode": mode, "video": video, "offer": offer,
                             "label": label})
        return session, ({"type": "answer", "sdp": "answer"} if offer else None)

    def get(self, session_id: str) -> FakeSession:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise NotFound(f"no session {session_id!r}", code="unknown_session") from None

    def collect_garbage_soon(self) -> None:
        self.garbage_collections += 1


class PickyPreparer(FakePreparer):
    def prepare(self, source: Path | bytes, size: int = 512, points: Any = None) -> Any:
        if source == b"no face here":
            raise NoFaceError("no face found in the image")
        return super().prepare(source, size, points)


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeManager:
    monkeypatch.setattr(avatars_module, "Renderer", FakeRenderer)
    store = AvatarStore(tmp_path, preparer=PickyPreparer())  # type: ignore[arg-type]
    asyncio.run(store.ensure_default())
    return FakeManager(store)


@pytest.fixture
def client(manager: FakeManager) -> Iterator[TestClient]:
    app = create_app(manager, token=TOKEN, max_upload=MAX_UPLOAD)  # type: ignore[arg-type]
    with TestClient(app, headers=AUTH) as c:  # one event loop for HTTP and WebSockets
        yield c


def _error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return str(body["error"]["message"])


def _upload(client: TestClient, data: bytes = b"portrait-1", **form: str) -> Any:
    return client.post("/v1/avatars", files={"image": ("p.png", data, "image/png")},
                       data={"consent": "true", **form})


def _session(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/sessions", json={"mode": "broadcast", **body})
    assert response.status_code == 201, response.text
    out: dict[str, Any] = response.json()
    return out


# ---------------------------------------------------------------------------- ops

def test_health_is_open_and_says_what_serves(client: TestClient, manager: FakeManager) -> None:
    _session(client)
    response = client.get("/healthz", headers={"authorization": ""})
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "sessions": 1, "capacity": 2,
                               "driver": "learned", "batching": None,
                               "renderer": {"kind": "cpu"}}


def test_metrics_are_prometheus_text(client: TestClient) -> None:
    _session(client)
    response = client.get("/metrics", headers={"authorization": ""})
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/plain")
    lines = response.text.splitlines()
    for sample in ("vivify_sessions 1.0", "vivify_capacity_sessions 2.0",
                   "vivify_sessions_created 1.0", "vivify_scheduler_busy_seconds 1.5",
                   "vivify_late_slots 2.0", "vivify_dropped_pairs 1.0", "vivify_viewers 0.0"):
        assert sample in lines


def test_the_openapi_tags_are_per_resource(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    tags = {(path, method): op["tags"] for path, ops in paths.items()
            for method, op in ops.items()}
    assert tags[("/healthz", "get")] == ["ops"] and tags[("/metrics", "get")] == ["ops"]
    assert tags[("/v1/avatars", "post")] == ["avatars"]
    assert tags[("/v1/avatars/{avatar_id}/preview.jpg", "get")] == ["avatars"]
    assert tags[("/v1/sessions", "post")] == ["sessions"]
    assert tags[("/v1/sessions/{session_id}/speak", "post")] == ["sessions"]
    assert tags[("/v1/verify", "post")] == ["provenance"]
    assert tags[("/v1/livekit/sessions", "post")] == ["integrations"]


# ---------------------------------------------------------------------------- auth

@pytest.mark.parametrize("header", ["", "Bearer wrong-token", f"Basic {TOKEN}", TOKEN])
def test_v1_needs_the_token(client: TestClient, header: str) -> None:
    response = client.get("/v1/avatars", headers={"authorization": header})
    _error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_the_preview_needs_no_token(client: TestClient, manager: FakeManager) -> None:
    avatar = _upload(client).json()["id"]
    response = client.get(f"/v1/avatars/{avatar}/preview.jpg", headers={"authorization": ""})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content[:2] == b"\xff\xd8"
    assert response.headers["cache-control"] == "max-age=3600"


def test_another_sites_page_cannot_post(client: TestClient) -> None:
    response = client.post("/v1/sessions", json={}, headers={"origin": "https://evil.test"})
    _error(response, 403, "forbidden_origin")


# ---------------------------------------------------------------------------- avatars

def test_avatar_lifecycle(client: TestClient, manager: FakeManager) -> None:
    created = _upload(client, consent_by="Ada")
    assert created.status_code == 201
    record = created.json()
    assert record["consent"]["by"] == "Ada" and record["consent"]["address"] == "testclient"
    again = _upload(client, consent="yes").json()
    assert again["id"] == record["id"] and len(again["consent_history"]) == 2
    listed = [a["id"] for a in client.get("/v1/avatars").json()["avatars"]]
    assert listed == ["default", record["id"]]
    assert client.get(f"/v1/avatars/{record['id']}").json()["id"] == record["id"]
    deleted = client.delete(f"/v1/avatars/{record['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert manager.garbage_collections == 1
    _error(client.get(f"/v1/avatars/{record['id']}"), 404, "unknown_avatar")
    _error(client.delete(f"/v1/avatars/{record['id']}"), 404, "unknown_avatar")


@pytest.mark.parametrize("consent", [None, "", "false", "no", "maybe"])
def test_an_upload_needs_consent(client: TestClient, consent: str | None) -> None:
    data = {} if consent is None else {"consent": consent}
    response = client.post("/v1/avatars", files={"image": ("p.png", b"x", "image/png")},
                           data=data)
    assert "right to use this likeness" in _error(response, 400, "consent_required")


def test_upload_errors(client: TestClient) -> None:
    _error(_upload(client, b"no face here"), 422, "no_face")
    _error(client.post("/v1/avatars", data={"consent": "true"}), 422, "invalid_request")
    # Over the upload limit but within the guard's (limit + multipart overhead): the route
    # reads one byte past the limit and stops.
    _error(_upload(client, b"x" * (MAX_UPLOAD + 1)), 413, "image_too_large")
    # Over the guard's limit: refused from the Content-Length, before the route runs.
    _error(_upload(client, b"x" * (MAX_UPLOAD + 70_000)), 413, "image_too_large")
    _error(_upload(client, points="x" * 2001), 422, "invalid_request")


def test_the_default_avatar_cannot_be_deleted(client: TestClient) -> None:
    _error(client.delete("/v1/avatars/default"), 409, "default_avatar")


# ---------------------------------------------------------------------------- sessions

def test_a_session_is_created_with_its_answer(client: TestClient, manager: FakeManager) -> None:
    avatar = _upload(client).json()["id"]
    response = client.post("/v1/sessions", json={
        "avatar": avatar, "mode": "mirror", "offer": OFFER, "label": False,
        "video": {"fps": 25, "size": 512, "codec": "h264"}})
    assert response.status_code == 201
    body = response.json()
    assert body == {"id": "s1", "mode": "mirror", "avatar": avatar,
                    "provenance": {"watermark": "0123abcd", "label": "AI-generated"},
                    "answer": {"type": "answer", "sdp": "answer"}}
    asked = manager.created[0]
    assert asked["offer"] == OFFER and asked["label"] is False
    assert (asked["video"].fps, asked["video"].size, asked["video"].codec) == (25, 512, "h264")


def test_a_broadcast_without_an_offer_has_no_answer(client: TestClient,
                                                    manager: FakeManager) -> None:
    body = _session(client, avatar="default")
    assert "answer" not in body and body["mode"] == "broadcast"
    assert manager.created[0]["video"].codec == "vp8"  # the defaults


@pytest.mark.parametrize(("body", "status", "code", "says"), [
    ({"avatar": "ghost"}, 404, "unknown_avatar", "ghost"),
    ({"video": {"size": 256}}, 400, "unsupported_size", "512"),
    ({"video": {"fps": 30}}, 422, "invalid_request", "video.fps"),
    ({"video": {"codec": "av1"}}, 422, "invalid_request", "video.codec"),
    ({"mode": "party"}, 422, "invalid_request", "mode"),
    ({"offer": {"type": "answer", "sdp": "x"}}, 422, "invalid_request", "offer.type"),
    ({"offer": {"type": "offer", "sdp": ""}}, 422, "invalid_request", "offer.sdp"),
])
def test_bad_session_requests(client: TestClient, manager: FakeManager, body: dict[str, Any],
                              status: int, code: str, says: str) -> None:
    assert says in _error(client.post("/v1/sessions", json=body), status, code)
    assert manager.created == []


def test_bodies_that_are_not_json_objects(client: TestClient, manager: FakeManager) -> None:
    for raw in (b"not json", b"[1]", b"null"):
        response = client.post("/v1/sessions", content=raw,
                               headers={"content-type": "application/json"})
        _error(response, 422, "invalid_request")


def test_a_full_server_says_when_to_retry(client: TestClient, manager: FakeManager) -> None:
    _session(client)
    _session(client)
    response = client.post("/v1/sessions", json={"mode": "broadcast"})
    _error(response, 503, "server_full")
    assert response.headers["retry-after"] == "10"


def test_session_bodies_are_limited(client: TestClient) -> None:
    response = client.post("/v1/sessions", content=b" " * (MAX_SESSION_BODY + 1),
                           headers={"content-type": "application/json"})
    _error(response, 413, "too_large")
    response = client.post("/v1/sessions/s1/viewers", content=b" " * (MAX_SESSION_BODY + 1),
                           headers={"content-type": "application/json"})
    _error(response, 413, "too_large")
    response = client.request("DELETE", "/v1/sessions/s1", content=b" " * (64 * 1024 + 1))
    _error(response, 413, "too_large")  # any other route: 64 KiB


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/v1/sessions/nope", None), ("DELETE", "/v1/sessions/nope", None),
    ("POST", "/v1/sessions/nope/viewers", {"offer": OFFER}),
    ("POST", "/v1/sessions/nope/speak", {"text": "hi"}),
])
def test_unknown_sessions_are_404s(client: TestClient, method: str, path: str,
                                   body: Any) -> None:
    _error(client.request(method, path, json=body), 404, "unknown_session")


def test_viewers_stats_and_delete(client: TestClient, manager: FakeManager) -> None:
    sid = _session(client)["id"]
    response = client.post(f"/v1/sessions/{sid}/viewers", json={"offer": OFFER})
    assert response.status_code == 201
    assert response.json() == {"viewer": "v1", "answer": {"type": "answer",
                                                          "sdp": "viewer answer"}}
    assert manager.sessions[sid].touched == 1
    _error(client.post(f"/v1/sessions/{sid}/viewers", json={}), 422, "invalid_request")
    assert client.get(f"/v1/sessions/{sid}").json() == {"mode": "broadcast",
                                                        "avatar": "default", "viewers": 1}
    session = manager.sessions[sid]
    response = client.delete(f"/v1/sessions/{sid}")
    assert response.status_code == 204 and session.closed
    _error(client.get(f"/v1/sessions/{sid}"), 404, "unknown_session")


def test_speak(client: TestClient, manager: FakeManager, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = _session(client)["id"]
    said: list[tuple[str, str]] = []

    async def synthesize(text: str, voice: str = "en-us") -> np.ndarray:
        said.append((text, voice))
        return np.zeros(8000, np.float32)

    monkeypatch.setattr(session_routes, "synthesize", synthesize)
    response = client.post(f"/v1/sessions/{sid}/speak", json={"text": "hello", "voice": "fr"})
    assert response.status_code == 202 and response.json() == {"duration_ms": 500}
    media = manager.sessions[sid].media
    assert said == [("hello", "fr")] and len(media.pushed) == 1
    assert media.calls == ["segment_end"]
    media.full = True
    _error(client.post(f"/v1/sessions/{sid}/speak", json={"text": "again"}), 409, "buffer_full")


@pytest.mark.parametrize(("error", "status"), [(VoiceUnavailable("no espeak-ng"), 503),
                                               (VoiceFailed("espeak-ng failed"), 422)])
def test_speak_when_the_voice_fails(client: TestClient, manager: FakeManager,
                                    monkeypatch: pytest.MonkeyPatch, error: Exception,
                                    status: int) -> None:
    sid = _session(client)["id"]

    async def synthesize(text: str, voice: str = "en-us") -> np.ndarray:
        raise error

    monkeypatch.setattr(session_routes, "synthesize", synthesize)
    response = client.post(f"/v1/sessions/{sid}/speak", json={"text": "hello"})
    _error(response, status, type(error).code)  # type: ignore[attr-defined]


@pytest.mark.parametrize("body", [{"text": ""}, {"text": "x" * 2001},
                                  {"text": "hi", "voice": "en-us; rm -rf /"},
                                  {"text": "hi", "voice": "-v"}])
def test_speak_validates_its_request(client: TestClient, manager: FakeManager,
                                     body: dict[str, Any]) -> None:
    sid = _session(client)["id"]
    _error(client.post(f"/v1/sessions/{sid}/speak", json=body), 422, "invalid_request")


# ---------------------------------------------------------------------------- other paths

def test_unknown_paths_and_methods(client: TestClient) -> None:
    _error(client.get("/v1/nothing-here"), 404, "not_found")
    _error(client.put("/v1/avatars"), 405, "http_error")


def test_the_browser_client_is_served(client: TestClient) -> None:
    response = client.get("/", headers={"authorization": ""})
    assert response.status_code == 200 and "<html" in response.text.lower()


def test_verify(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import vivify.streamer.offline.verify as verify_module

    def verify_file(source: Any) -> Any:
        data = source.read()
        if data == b"garbage":
            raise verify_module.VerifyInputError("not a video or an image")
        return SimpleNamespace(to_json=lambda: json.dumps({"marked": True,
                                                           "bytes": len(data)}))

    monkeypatch.setattr(verify_module, "verify_file", verify_file)
    response = client.post("/v1/verify", files={"file": ("clip.mp4", b"12345", "video/mp4")})
    assert response.status_code == 200
    assert response.json() == {"marked": True, "bytes": 5, "file": "clip.mp4"}
    response = client.post("/v1/verify", files={"file": ("x.bin", b"garbage")})
    _error(response, 422, "unreadable_media")
    _error(client.post("/v1/verify"), 422, "invalid_request")


# ---------------------------------------------------------------------------- WebSocket

def _close_code(ws: Any) -> int:
    with pytest.raises(WebSocketDisconnect) as exc:
        while True:
            ws.receive_text()
    return int(exc.value.code)


@pytest.mark.parametrize(("path", "headers", "code"), [
    ("/v1/sessions/nope/ws", AUTH, 4404),
    ("/v1/sessions/nope/ws", {"authorization": ""}, 4401),
    ("/v1/sessions/nope/ws?token=wrong", {"authorization": ""}, 4401),
    ("/v1/sessions/nope/ws", {**AUTH, "origin": "https://evil.test"}, 4403),
])
def test_websocket_refusals(client: TestClient, path: str, headers: dict[str, str],
                            code: int) -> None:
    with client.websocket_connect(path, headers=headers) as ws:
        assert _close_code(ws) == code


def test_websocket_token_in_the_query(client: TestClient, manager: FakeManager) -> None:
    sid = _session(client)["id"]
    with client.websocket_connect(f"/v1/sessions/{sid}/ws?token={TOKEN}",
                                  headers={"authorization": ""}) as ws:
        ws.send_text('{"type": "stats"}')
        assert ws.receive_json()["type"] == "stats"


def test_websocket_messages(client: TestClient, manager: FakeManager) -> None:
    sid = _session(client)["id"]
    session = manager.sessions[sid]
    with client.websocket_connect(f"/v1/sessions/{sid}/ws") as ws:
        ws.send_bytes(b"\x00\x01" * 160)
        ws.send_bytes(b"\x00\x01\x02")
        event = ws.receive_json()
        assert event["type"] == "error" and event["code"] == "bad_audio"
        ws.send_bytes(b"\x00" * (MAX_WS_BINARY + 2))
        assert ws.receive_json()["code"] == "bad_audio"
        ws.send_text("{not json")
        assert ws.receive_json()["code"] == "bad_message"
        ws.send_text(json.dumps({"type": "controls", "emotion": "happy", "intensity": 0.5,
                                 "gaze": [0.1, -0.2], "distance": 0.3}))
        ws.send_text('{"type": "segment_end"}')
        ws.send_text('{"type": "interrupt"}')
        ws.send_text('{"type": "stats"}')
        assert ws.receive_json() == {"type": "stats", "mode": "broadcast", "avatar": "default",
                                     "viewers": 0}
        session.media.full = True
        ws.send_bytes(b"\x00\x00")
        assert ws.receive_json()["code"] == "buffer_full"
    assert len(session.media.pushed) == 1 and session.media.pushed[0].shape == (160,)
    c = session.media.controls
    assert (c.emotion, c.intensity, c.gaze, c.distance) == ("happy", 0.5, (0.1, -0.2), 0.3)
    assert session.media.calls == ["segment_end", "interrupt"]
    assert session.touched >= 9 and session.sockets == set()


@pytest.mark.parametrize(("shutting_down", "code"), [(False, 1000), (True, 1012)])
def test_a_closed_session_says_so_then_closes(client: TestClient, manager: FakeManager,
                                              shutting_down: bool, code: int) -> None:
    sid = _session(client)["id"]
    with client.websocket_connect(f"/v1/sessions/{sid}/ws") as ws:
        ws.send_text('{"type": "stats"}')
        ws.receive_json()  # the socket is registered with the session
        manager.shutting_down = shutting_down
        assert client.delete(f"/v1/sessions/{sid}").status_code == 204
        assert ws.receive_json() == {"type": "error", "code": "session_closed",
                                     "message": "deleted by the API"}
        assert _close_code(ws) == code


def test_a_client_that_reads_nothing_is_cut_off(client: TestClient,
                                                manager: FakeManager) -> None:
    sid = _session(client)["id"]
    session = manager.sessions[sid]
    session.flood = True
    with client.websocket_connect(f"/v1/sessions/{sid}/ws") as ws:
        ws.send_text('{"type": "interrupt"}')  # the session emits more than the outbox holds
        assert _close_code(ws) == 1008
    assert sid in manager.sessions and not session.closed  # the session goes on
