"""Hostile input at every edge of the server (issue 15): nothing crashes it, nothing bypasses
admission, nothing is read before auth.

The guard and the parsers are tested directly (pure ASGI calls with a counting ``receive``);
the whole app in-process through Starlette's TestClient (lifespan, routes, WebSockets, the
real engines); property-based cases with Hypothesis. The same cases against a real
``vivify serve`` process, with memory and the log watched, are bench/fuzz/ (``make fuzz``).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.images import png_bytes
from tests.support.waiting import eventually
from vivify.engines.motion.controls import Controls, motion_offset
from vivify.engines.motion.generator import control_input
from vivify.engines.motion.vector import HIGH, LOW, MOTION_DIM, clip_motion
from vivify.streamer.server.guard import BodyLimit, GuardConfig, RequestGuard, bearer_token
from vivify.streamer.server.messages import MAX_DEPTH, parse_client_message

TOKEN = "t0ken-for-tests"

# ---------------------------------------------------------------------------- engine clamps

weird_floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [math.nan, math.inf, -math.inf, 1e300, -1e300, 5e-324])


# deadline=None throughout: Hypothesis' default 200 ms per example is a machine-speed bound.
@settings(deadline=None)
@given(st.lists(weird_floats, min_size=MOTION_DIM, max_size=MOTION_DIM))
def test_clip_motion_makes_any_vector_finite_and_in_range(values: list[float]) -> None:
    with np.errstate(over="ignore", invalid="ignore"):
        out = clip_motion(np.array(values, dtype=np.float64).astype(np.float32))
    assert np.isfinite(out).all() and (out >= LOW).all() and (out <= HIGH).all()


@settings(deadline=None)
@given(gaze=st.tuples(weird_floats, weird_floats), distance=weird_floats, intensity=weird_floats,
       emotion=st.sampled_from(["neutral", "happy", "angry", "bogus"]))
def test_controls_clamp_whatever_they_hold(gaze: tuple[float, float], distance: float,
                                           intensity: float, emotion: str) -> None:
    c = Controls(emotion=emotion, intensity=intensity, gaze=gaze, distance=distance)
    assert np.isfinite(motion_offset(c)).all()
    model_in = control_input(c)
    assert np.isfinite(model_in).all() and np.abs(model_in).max() <= 1.0


def test_renderer_survives_a_nan_motion(renderer: Any) -> None:
    """Before: NaN gaze reached cv2.remap and killed the process (segfault)."""
    vec = np.full(MOTION_DIM, np.nan, np.float32)
    vec[3] = np.inf
    frame = renderer.render(clip_motion(vec))
    assert frame.image.dtype == np.uint8 and frame.image.shape[2] == 3


# ---------------------------------------------------------------------------- messages

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | weird_floats | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)
message_types = st.sampled_from(["interrupt", "segment_end", "stats", "controls", "nope", 7])


@st.composite
def client_texts(draw: st.DrawFn) -> str:
    """Texts close to real messages (a known type, plausible fields) and plain junk."""
    if draw(st.booleans()):
        return draw(st.text(max_size=200))
    body = {"type": draw(message_types)}
    for key in draw(st.lists(st.sampled_from(["gaze", "distance", "intensity", "emotion",
                                              "extra"]), max_size=3)):
        body[key] = draw(json_values)
    return json.dumps(body)  # json.dumps writes NaN/Infinity, as a hostile client would


@settings(max_examples=400, deadline=None)
@given(client_texts())
def test_any_text_is_a_valid_message_or_a_value_error(text: str) -> None:
    try:
        msg = parse_client_message(text)
    except ValueError as exc:
        assert str(exc)  # a readable reason for the error event
        return
    if msg.type == "controls":
        for v in [*(msg.gaze or ()), msg.distance, msg.intensity]:
            assert v is None or (math.isfinite(v) and -1.0 <= v <= 1.0)


@pytest.mark.parametrize("text", [
    '{"type":"controls","gaze":[NaN,0]}', '{"type":"controls","gaze":[Infinity,0]}',
    '{"type":"controls","gaze":[1e300,-1e300]}', '{"type":"controls","distance":-Infinity}',
    '{"type":"controls","intensity":true}', "[" * 100_000, '{"a":' * 50 + "1" + "}" * 50,
    "x" * 10_000,
])
def test_reported_bad_messages_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_client_message(text)


def test_nesting_is_checked_before_parsing() -> None:
    ok = '{"type":"controls","gaze":[0.1,0.2]}'
    assert parse_client_message(ok).type == "controls"
    deep = '{"type":"stats","x":' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}"
    with pytest.raises(ValueError, match="nested"):
        parse_client_message(deep)
    assert parse_client_message('{"type":"stats"}').type == "stats"


# ---------------------------------------------------------------------------- the guard

class EchoApp:
    """An ASGI app that reads its whole body and answers its length (what FastAPI does)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
            return
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = json.dumps({"size": size}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


class Peer:
    """Drives one ASGI call: a body in chunks, counting how many the app pulled."""

    def __init__(self, chunks: int = 1, chunk: bytes = b"x" * 1024) -> None:
        self.left, self.chunk, self.pulled = chunks, chunk, 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        self.pulled += 1
        self.left -= 1
        return {"type": "http.request", "body": self.chunk, "more_body": self.left > 0}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def error(self) -> str:
        return str(json.loads(self.sent[1]["body"])["error"]["code"])


def _scope(method: str = "POST", path: str = "/v1/sessions", headers: dict[str, str] | None = None,
           kind: str = "http", query: str = "") -> dict[str, Any]:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": kind, "method": method, "path": path, "headers": raw, "scheme": "http",
            "query_string": query.encode()}


def _guard(**config: Any) -> RequestGuard:
    config.setdefault("token", TOKEN)
    config.setdefault("limits", (BodyLimit("POST", r"/v1/sessions", 4096),))
    return RequestGuard(EchoApp(), GuardConfig(**config))


def _call(guard: RequestGuard, scope: dict[str, Any], peer: Peer) -> Peer:
    asyncio.run(guard(scope, peer.receive, peer.send))  # type: ignore[arg-type]
    return peer


AUTH = {"authorization": f"Bearer {TOKEN}", "host": "127.0.0.1:8080"}


def test_no_token_is_refused_before_one_body_byte_is_read() -> None:
    peer = _call(_guard(), _scope(headers={"content-length": str(300 * 2**20)}), Peer(10**6))
    assert peer.status == 401 and peer.error == "unauthorized" and peer.pulled == 0


def test_declared_oversize_is_refused_before_reading() -> None:
    peer = _call(_guard(), _scope(headers={**AUTH, "content-length": str(300 * 2**20)}),
                 Peer(10**6))
    assert peer.status == 413 and peer.error == "too_large" and peer.pulled == 0


def test_a_streamed_body_is_cut_off_at_its_limit() -> None:
    peer = _call(_guard(), _scope(headers=AUTH), Peer(10**6))  # chunked: no Content-Length
    assert peer.status == 413 and peer.pulled == 5  # 4 KiB limit, 1 KiB chunks
    assert len(peer.sent) == 2  # the 413 only: the app's answer to a cut body is dropped


def test_within_limits_the_body_reaches_the_app() -> None:
    peer = _call(_guard(), _scope(headers=AUTH), Peer(3))
    assert peer.status == 200 and json.loads(peer.sent[1]["body"]) == {"size": 3072}


@pytest.mark.parametrize(("header", "ok"), [
    (f"Bearer {TOKEN}", True), (f"bearer {TOKEN}", True), (f"BEARER   {TOKEN}  ", True),
    (f"Basic {TOKEN}", False), (f"XXXXXXX{TOKEN}", False), ("Bearer", False), ("", False),
    (f"Bearer {TOKEN}x", False), (TOKEN, False),
])
def test_bearer_parsing(header: str, ok: bool) -> None:
    peer = _call(_guard(), _scope(headers={"authorization": header}), Peer(1))
    assert (peer.status == 200) is ok
    assert (bearer_token(header) == TOKEN) is ok


@pytest.mark.parametrize(("origin", "allowed", "status"), [
    (None, (), 200), ("http://127.0.0.1:8080", (), 200), ("http://evil.example", (), 403),
    ("null", (), 403), ("http://evil.example", ("http://evil.example",), 200),
    ("https://127.0.0.1:8080", (), 403),  # another scheme is another origin
])
def test_cross_site_requests_are_refused(origin: str | None, allowed: tuple[str, ...],
                                         status: int) -> None:
    headers = dict(AUTH, **({"origin": origin} if origin else {}))
    peer = _call(_guard(token=None, allowed_origins=allowed), _scope(headers=headers), Peer(1))
    assert peer.status == status
    if status == 403:
        assert peer.error == "forbidden_origin"


class WsPeer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


@pytest.mark.parametrize(("headers", "query", "code"), [
    ({}, "", 4401), ({}, "token=wrong", 4401), ({}, f"token={TOKEN}", 1000),
    ({"authorization": f"Bearer {TOKEN}"}, "", 1000),
    ({"origin": "http://evil.example"}, f"token={TOKEN}", 4403),
])
def test_websocket_refusals_use_the_documented_close_codes(headers: dict[str, str], query: str,
                                                           code: int) -> None:
    peer = WsPeer()
    scope = _scope("GET", "/v1/sessions/x/ws", dict(headers, host="127.0.0.1:8080"),
                   kind="websocket", query=query)
    asyncio.run(_guard()(scope, peer.receive, peer.send))  # type: ignore[arg-type]
    assert peer.sent[0]["type"] == "websocket.accept"  # the handshake completes: a close code
    assert peer.sent[-1] == {"type": "websocket.close", "code": code, **(
        {"reason": peer.sent[-1]["reason"]} if "reason" in peer.sent[-1] else {})}


def test_empty_token_is_refused_at_start() -> None:
    from vivify.streamer.cli.main import main
    from vivify.streamer.server.config import ServerConfig

    with pytest.raises(ValueError, match="empty"):
        ServerConfig(token="")
    with pytest.raises(ValueError, match="empty"):
        ServerConfig(token="   ")
    assert main(["serve", "--token", "", "--port", "1"]) == 2


def test_tokens_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    from vivify.streamer.server.serve import RedactSecrets

    redact = RedactSecrets("sekrit-value")
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5", "GET",
                               "/v1/sessions/abc/ws?token=sekrit-value&x=1", "1.1", 101), None)
    assert redact.filter(record)
    assert "sekrit" not in record.getMessage() and "token=[redacted]&x=1" in record.getMessage()
    for text in ("Authorization: Bearer abc.def", "a sekrit-value in an exception"):
        out = redact.redact(text)
        assert "abc.def" not in out and "sekrit" not in out


# ---------------------------------------------------------------------------- admission

class ColdAvatars:
    """An avatar store whose renderer takes as long as the test wants (a cold upload)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0

    def get(self, avatar_id: str) -> None:
        return None

    async def renderer(self, avatar_id: str) -> Any:
        self.waiting += 1
        await self.release.wait()
        raise RuntimeError("renderer failed to load")


def test_a_burst_on_a_cold_avatar_admits_at_most_the_capacity() -> None:
    from vivify.streamer.media.clock import MonotonicClock
    from vivify.streamer.media.scheduler import InferenceScheduler
    from vivify.streamer.server.config import ServerConfig
    from vivify.streamer.server.errors import Full
    from vivify.streamer.server.manager import SessionManager
    from vivify.streamer.server.session import VideoOptions

    async def burst() -> tuple[list[BaseException | None], int, int]:
        avatars = ColdAvatars()
        manager = SessionManager(ServerConfig(), avatars, InferenceScheduler(1),  # type: ignore[arg-type]
                                 MonotonicClock(), capacity=3)
        creates = [asyncio.create_task(manager.create("cold", "broadcast", VideoOptions(), None))
                   for _ in range(30)]
        # every create past the capacity is refused at once; the admitted ones wait
        await eventually(lambda: sum(t.done() for t in creates) == 27, 10,
                         "27 of 30 creates refused")
        waiting = avatars.waiting
        avatars.release.set()  # every admitted create now fails: its place must come back
        results = await asyncio.gather(*creates, return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results], waiting, \
            manager._reserved

    results, waiting, reserved = asyncio.run(burst())
    full = [r for r in results if isinstance(r, Full)]
    assert waiting == 3 and len(full) == 27
    assert all(isinstance(r, RuntimeError) for r in results if not isinstance(r, Full))
    assert reserved == 0  # released on the failure path


# ---------------------------------------------------------------------------- the whole app

@pytest.fixture(scope="module")
def client(face_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from vivify.streamer.server.config import ServerConfig
    from vivify.streamer.server.serve import build

    config = ServerConfig(token=TOKEN, max_sessions=2, max_upload_bytes=2 * 2**20,
                          session_idle_timeout=1.5, workers=1)
    class AppClient(TestClient):
        manager: Any  # the app's SessionManager: the tests look inside it

    app, manager = build(config, home=tmp_path_factory.mktemp("home"))
    with AppClient(app, headers={"authorization": f"Bearer {TOKEN}"}) as c:
        c.manager = manager
        yield c


def _offer(audio: bool = True, video: bool = True) -> str:
    """An offer's SDP to damage; one-sided offers (no audio, no video) are the damage that
    :func:`vivify.streamer.client.offer_peer` cannot make, so the sections are added here."""
    from vivify.streamer.rtc.peer import new_peer_connection

    async def make() -> str:
        pc = new_peer_connection(())
        if audio:
            pc.addTransceiver("audio", direction="recvonly")
        if video:
            pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return str(sdp)

    return asyncio.run(make())


def _without_codecs(sdp: str) -> str:
    lines = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            line = " ".join(line.split()[:3])
        elif line.startswith(("a=rtpmap", "a=fmtp", "a=rtcp-fb")):
            continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _bad_candidate(sdp: str) -> str:
    return sdp.replace("a=mid:0", "a=mid:0\r\na=candidate:1 1 udp notanumber 1.2.3.4 x typ", 1)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "no_codecs", "bad_candidate", "audio_only",
                                    "mirror_video_only", "not_sdp"])
def test_malformed_offers_are_400_json(client: Any, damage: str) -> None:
    offer = _offer(video=damage != "audio_only", audio=damage != "mirror_video_only")
    sdp = {"truncated": offer[: len(offer) // 2], "no_codecs": _without_codecs(offer),
           "bad_candidate": _bad_candidate(offer), "not_sdp": "\x00" * 64}.get(damage, offer)
    r = client.post("/v1/sessions", json={"mode": "mirror",
                                          "offer": {"type": "offer", "sdp": sdp}})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "bad_sdp"
    assert not client.manager.sessions


@pytest.mark.slow
def test_a_video_only_broadcast_offer_works(client: Any) -> None:
    r = client.post("/v1/sessions", json={"mode": "broadcast", "offer": {
        "type": "offer", "sdp": _offer(audio=False)}})
    assert r.status_code == 201, r.text
    answer = r.json()["answer"]["sdp"]
    assert "m=video" in answer and "m=audio" not in answer
    assert client.delete(f"/v1/sessions/{r.json()['id']}").status_code == 204


@pytest.mark.slow
def test_controls_that_once_crashed_the_server(client: Any) -> None:
    sid = client.post("/v1/sessions", json={"mode": "broadcast"}).json()["id"]
    try:
        with client.websocket_connect(f"/v1/sessions/{sid}/ws") as ws:
            for text in ('{"type":"controls","gaze":[NaN,0]}',
                         '{"type":"controls","gaze":[Infinity,0]}',
                         '{"type":"controls","gaze":[1e300,-1e300]}', "[" * 100_000):
                ws.send_text(text)
                event = ws.receive_json()
                assert event["type"] == "error" and event["code"] == "bad_message"
            ws.send_text('{"type":"controls","gaze":[0.5,-0.5],"distance":0.2}')
            ws.send_text('{"type":"stats"}')
            assert ws.receive_json()["type"] == "stats"  # still rendering, still answering
        gaze = client.manager.sessions[sid].media.controls.gaze
        assert gaze == (0.5, -0.5)
    finally:
        client.delete(f"/v1/sessions/{sid}")


@pytest.mark.slow
def test_unknown_session_websocket_closes_4404(client: Any) -> None:
    from starlette.websockets import WebSocketDisconnect

    with client.websocket_connect("/v1/sessions/nope/ws") as ws, \
            pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_text()
    assert closed.value.code == 4404


SESSION_ROUTES = ["/v1/sessions", "/v1/sessions/{sid}/viewers", "/v1/sessions/{sid}/speak"]
DOCUMENTED = {201, 202, 400, 404, 409, 413, 422, 503}


@pytest.mark.slow
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(route=st.sampled_from(SESSION_ROUTES), body=json_values | st.fixed_dictionaries(
    {}, optional={"mode": json_values | st.sampled_from(["broadcast", "mirror"]),
                  "avatar": json_values, "video": json_values, "label": json_values,
                  "offer": json_values, "text": st.text(max_size=30), "voice": json_values}))
def test_any_json_body_gets_a_documented_answer(client: Any, route: str, body: Any) -> None:
    sid = next(iter(client.manager.sessions), "none")
    payload = json.dumps(body).encode()  # NaN and Infinity as a hostile client writes them
    r = client.post(route.format(sid=sid), content=payload,
                    headers={"content-type": "application/json"})
    assert r.status_code in DOCUMENTED, r.text
    if r.status_code >= 400:
        assert r.json()["error"]["code"]
    for session_id in list(client.manager.sessions):
        if session_id != sid or len(client.manager.sessions) > 1:
            client.delete(f"/v1/sessions/{session_id}")


@pytest.mark.slow
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(messages=st.lists(client_texts() | st.binary(max_size=300), min_size=1, max_size=6))
def test_any_websocket_message_gets_a_documented_answer(client: Any,
                                                        messages: list[str | bytes]) -> None:
    from vivify.streamer.server.messages import SERVER_EVENTS

    sid = client.post("/v1/sessions", json={"mode": "broadcast"}).json()["id"]
    try:
        with client.websocket_connect(f"/v1/sessions/{sid}/ws") as ws:
            for m in messages:
                ws.send_bytes(m) if isinstance(m, bytes) else ws.send_text(m)
            ws.send_text('{"type":"stats"}')
            while (event := ws.receive_json())["type"] != "stats":
                assert event["type"] in SERVER_EVENTS
                if event["type"] == "error":
                    assert event["code"] in {"bad_message", "bad_audio", "buffer_full"}
    finally:
        assert client.delete(f"/v1/sessions/{sid}").status_code == 204


@pytest.mark.slow
def test_verify_refuses_a_huge_image_from_its_header(client: Any) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (13000, 13000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 2**20  # small on the wire: 169 MP inside
    r = client.post("/v1/verify", files={"file": ("big.png", buf.getvalue(), "image/png")})
    assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large"


@pytest.mark.slow
@pytest.mark.timeout(30)  # the idle timeout is 1.5 s: a session that never ends fails here
def test_an_idle_broadcast_ends_and_says_so(client: Any) -> None:
    sid = client.post("/v1/sessions", json={"mode": "broadcast"}).json()["id"]
    with client.websocket_connect(f"/v1/sessions/{sid}/ws") as ws:
        event = ws.receive_json()  # nothing sent: the session ends by itself
    assert event["code"] == "session_closed" and "idle" in event["message"]
    assert client.get(f"/v1/sessions/{sid}").status_code == 404


@pytest.mark.slow
def test_consent_is_a_history_and_files_are_private(client: Any, astronaut: np.ndarray) -> None:
    portrait = png_bytes(np.ascontiguousarray(astronaut[:, ::-1]))
    ids = []
    for who in ("First Uploader", "Second Uploader"):
        r = client.post("/v1/avatars", data={"consent": "true", "consent_by": who},
                        files={"image": ("a.png", portrait, "image/png")})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    assert ids[0] == ids[1]
    record = client.get(f"/v1/avatars/{ids[0]}").json()
    assert record["consent"]["by"] == "First Uploader"  # never overwritten
    assert [c["by"] for c in record["consent_history"]] == ["First Uploader", "Second Uploader"]
    uploads = client.manager.avatars.uploads
    assert stat.S_IMODE(uploads.stat().st_mode) == 0o700
    for f in uploads.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert client.delete(f"/v1/avatars/{ids[0]}").status_code == 204


@pytest.mark.slow
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(route=st.sampled_from(["/v1/avatars", "/v1/verify"]), data=st.binary(max_size=2000),
       fields=st.dictionaries(st.sampled_from(["consent", "consent_by", "other"]),
                              st.text(max_size=300), max_size=3),
       field_name=st.sampled_from(["image", "file", "junk"]))
def test_any_upload_gets_a_documented_answer(client: Any, route: str, data: bytes,
                                             fields: dict[str, str], field_name: str) -> None:
    r = client.post(route, data=fields, files={field_name: ("x.bin", data, "image/png")})
    assert r.status_code in {200, 201, 400, 413, 422}, r.text
    if r.status_code >= 400:
        assert r.json()["error"]["code"]
