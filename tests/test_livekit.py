"""LiveKit Agents avatar protocol (streamer/integrations/livekit_*.py), against a fake room.

No LiveKit server can run here (none on PyPI, npm or Debian), so — as livekit/agents' own
tests do — the room is faked: :class:`FakeSFU` connects :class:`FakeRoom` objects in-process,
checks their JWTs with livekit-api, routes RPCs and byte streams between them and records
every registration, call, stream and published track. Everything else is real: the agent's
``DataStreamAudioOutput``, the avatar's ``DataStreamAudioReceiver``, the ``livekit.rtc``
sources, tracks, frames and ``AVSynchronizer`` (the rtc SDK runs locally), the engines.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("livekit.agents")

from livekit import api, rtc
from livekit.agents import AgentSession
from livekit.agents.voice.avatar import DataStreamAudioOutput

from vivify.streamer.integrations.avatar_session import LocalAvatars
from vivify.streamer.integrations.livekit_agent import (
    VivifyAvatarSession,
    mint_avatar_token,
)
from vivify.streamer.integrations.livekit_worker import LiveKitAvatarWorker, ask_server

pytestmark = pytest.mark.slow

KEY, SECRET = "devkey", "a-test-secret-of-at-least-32-bytes!!"
AGENT = "agent-AJ_test"
TTS_RATE = 24000  # what a TTS sends; the worker resamples to the engines' 16 kHz


# ---------------------------------------------------------------------- the fake room
@dataclass
class RpcCall:
    t: float
    caller: str
    destination: str
    method: str
    payload: str
    result: str = ""


@dataclass
class StreamRecord:
    sender: str
    destinations: list[str]
    info: rtc.ByteStreamInfo
    chunks: list[bytes] = field(default_factory=list)
    closed: bool = False


class FakeSFU:
    """The rooms of one fake LiveKit server."""

    url = "ws://sfu.test"

    def __init__(self) -> None:
        self.rooms: dict[str, list[FakeRoom]] = {}
        self.rpc_log: list[RpcCall] = []
        self.registrations: list[tuple[str, str]] = []  # (identity, method)
        self.streams: list[StreamRecord] = []
        self.joined: list[str] = []

    def room(self) -> FakeRoom:
        return FakeRoom(self)

    def member(self, room: str, identity: str) -> FakeRoom | None:
        return next((r for r in self.rooms.get(room, []) if r.identity == identity), None)


class FakeRemoteParticipant:
    def __init__(self, identity: str, kind: int, attributes: dict[str, str]) -> None:
        self.identity = identity
        self.kind = kind
        self.attributes = dict(attributes)
        self.state = rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE
        self.track_publications: dict[str, FakePublication] = {}


@dataclass
class FakePublication:
    sid: str
    kind: int
    source: int
    track: Any = None
    subscribed: bool = False


class FakeByteStreamReader:
    def __init__(self, info: rtc.ByteStreamInfo) -> None:
        self._info = info
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    @property
    def info(self) -> rtc.ByteStreamInfo:
        return self._info

    def __aiter__(self) -> FakeByteStreamReader:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._queue.get()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        pass


class FakeByteStreamWriter:
    def __init__(self, record: StreamRecord, readers: list[FakeByteStreamReader]) -> None:
        self.record = record
        self._readers = readers

    @property
    def info(self) -> rtc.ByteStreamInfo:
        return self.record.info

    async def write(self, data: bytes) -> None:
        self.record.chunks.append(bytes(data))
        for reader in self._readers:
            reader._queue.put_nowait(bytes(data))

    async def aclose(self, **_: Any) -> None:
        self.record.closed = True
        for reader in self._readers:
            reader._queue.put_nowait(None)


class FakeLocalParticipant:
    _sids = itertools.count(1)

    def __init__(self, room: FakeRoom) -> None:
        self.room = room
        self.identity = ""
        self.kind = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
        self.attributes: dict[str, str] = {}
        self._rpc_handlers: dict[str, Callable[..., Any]] = {}
        self.track_publications: dict[str, FakePublication] = {}

    def register_rpc_method(self, method: str, handler: Callable[..., Any] | None = None) -> Any:
        if handler is None:
            return lambda fn: self.register_rpc_method(method, fn)
        self._rpc_handlers[method] = handler
        self.room.sfu.registrations.append((self.identity, method))
        return handler

    def unregister_rpc_method(self, method: str) -> None:
        self._rpc_handlers.pop(method, None)

    async def perform_rpc(self, *, destination_identity: str, method: str, payload: str,
                          response_timeout: float | None = None, **_: Any) -> str:
        call = RpcCall(time.perf_counter(), self.identity, destination_identity, method, payload)
        self.room.sfu.rpc_log.append(call)
        dest = self.room.sfu.member(self.room.name, destination_identity)
        if dest is None:
            raise rtc.RpcError(rtc.RpcError.ErrorCode.RECIPIENT_NOT_FOUND, "no such participant")
        handler = dest.local_participant._rpc_handlers.get(method)
        if handler is None:
            raise rtc.RpcError(rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD, "unsupported method")
        result = handler(rtc.RpcInvocationData(uuid.uuid4().hex, self.identity, payload,
                                               response_timeout or 10.0, method))
        if inspect.isawaitable(result):
            result = await result
        call.result = str(result)
        return call.result

    async def stream_bytes(self, name: str, *, total_size: int | None = None,
                           mime_type: str = "application/octet-stream",
                           attributes: dict[str, str] | None = None, stream_id: str | None = None,
                           destination_identities: list[str] | None = None,
                           topic: str = "") -> FakeByteStreamWriter:
        info = rtc.ByteStreamInfo(stream_id=stream_id or uuid.uuid4().hex, mime_type=mime_type,
                                  topic=topic, timestamp=int(time.time() * 1000),
                                  size=total_size, attributes=dict(attributes or {}), name=name)
        record = StreamRecord(self.identity, list(destination_identities or []), info)
        self.room.sfu.streams.append(record)
        readers = []
        for other in self.room.sfu.rooms.get(self.room.name, []):
            if other is self.room or (destination_identities
                                      and other.identity not in destination_identities):
                continue
            handler = other._byte_handlers.get(topic)
            if handler is not None:
                reader = FakeByteStreamReader(info)
                readers.append(reader)
                handler(reader, self.identity)
        return FakeByteStreamWriter(record, readers)

    async def publish_track(self, track: Any, options: Any = None) -> FakePublication:
        pub = FakePublication(f"TR_{next(self._sids)}", track.kind,
                              getattr(options, "source", 0), track)
        self.track_publications[pub.sid] = pub
        self.room.emit("local_track_published", pub, track)
        for other in self.room.sfu.rooms.get(self.room.name, []):
            if other is not self.room:
                other._remote_published(self.identity, pub)
        return pub

    async def unpublish_track(self, sid: str) -> None:
        self.track_publications.pop(sid, None)

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        self.attributes.update(attributes)


class FakeRoom(rtc.EventEmitter[str]):
    """Enough of ``rtc.Room`` for both sides of the avatar protocol."""

    def __init__(self, sfu: FakeSFU) -> None:
        super().__init__()
        self.sfu = sfu
        self.name = ""
        self.local_participant = FakeLocalParticipant(self)
        self.remote_participants: dict[str, FakeRemoteParticipant] = {}
        self._byte_handlers: dict[str, Callable[..., Any]] = {}
        self._connected = False

    @property
    def identity(self) -> str:
        return self.local_participant.identity

    def isconnected(self) -> bool:
        return self._connected

    async def connect(self, url: str, token: str, options: Any = None) -> None:
        if url != self.sfu.url:
            raise ConnectionError(f"cannot reach {url}")
        claims = api.TokenVerifier(KEY, SECRET).verify(token)  # as the server would
        assert claims.video is not None and claims.video.room_join
        lp = self.local_participant
        self.name, lp.identity = claims.video.room or "", claims.identity
        lp.kind = (rtc.ParticipantKind.PARTICIPANT_KIND_AGENT if claims.kind == "agent"
                   else rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD)
        lp.attributes = dict(claims.attributes or {})
        members = self.sfu.rooms.setdefault(self.name, [])
        self._connected = True
        for other in members:
            self._remote_joined(other.local_participant)
            other._remote_joined(lp)
        members.append(self)
        self.sfu.joined.append(lp.identity)
        self.emit("connection_state_changed", rtc.ConnectionState.CONN_CONNECTED)

    async def disconnect(self) -> None:
        if not self._connected:
            return
        self._connected = False
        members = self.sfu.rooms.get(self.name, [])
        if self in members:
            members.remove(self)
        for other in members:
            other._remote_left(self.identity)
        self.emit("connection_state_changed", rtc.ConnectionState.CONN_DISCONNECTED)
        self.emit("disconnected", "CLIENT_INITIATED")

    def register_byte_stream_handler(self, topic: str, handler: Callable[..., Any]) -> None:
        self._byte_handlers[topic] = handler

    def unregister_byte_stream_handler(self, topic: str) -> None:
        self._byte_handlers.pop(topic, None)

    def _remote_joined(self, lp: FakeLocalParticipant) -> None:
        rp = FakeRemoteParticipant(lp.identity, lp.kind, lp.attributes)
        rp.track_publications = {sid: FakePublication(p.sid, p.kind, p.source)
                                 for sid, p in lp.track_publications.items()}
        self.remote_participants[lp.identity] = rp
        self.emit("participant_connected", rp)
        self.emit("participant_active", rp)

    def _remote_left(self, identity: str) -> None:
        rp = self.remote_participants.pop(identity, None)
        if rp is not None:
            self.emit("participant_disconnected", rp)

    def _remote_published(self, identity: str, pub: FakePublication) -> None:
        rp = self.remote_participants.get(identity)
        if rp is not None:
            remote = FakePublication(pub.sid, pub.kind, pub.source)
            rp.track_publications[pub.sid] = remote
            self.emit("track_published", remote, rp)


def agent_token(room: str = "room-1", identity: str = AGENT) -> str:
    return (api.AccessToken(KEY, SECRET).with_identity(identity).with_kind("agent")
            .with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt())


# ---------------------------------------------------------------------- recording sources
class Published:
    """What reached the real rtc sources, in order, with the time it did."""

    def __init__(self) -> None:
        self.video: list[float] = []
        self.audio: list[tuple[float, np.ndarray]] = []

    def counts_apart(self) -> int:
        """The most the published video and audio frame counts ever differed by."""
        events = sorted([(t, 1) for t in self.video] + [(t, -1) for t, _ in self.audio])
        lead = worst = 0
        for _, d in events:
            lead += d
            worst = max(worst, abs(lead))
        return worst


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> Published:
    record = Published()

    class AudioSource(rtc.AudioSource):
        async def capture_frame(self, frame: rtc.AudioFrame) -> None:
            assert frame.sample_rate == 16000 and frame.samples_per_channel == 640
            record.audio.append((time.perf_counter(),
                                 np.frombuffer(bytes(frame.data), np.int16).copy()))
            await super().capture_frame(frame)

    class VideoSource(rtc.VideoSource):
        def capture_frame(self, frame: rtc.VideoFrame, **kw: Any) -> None:
            assert (frame.width, frame.height, frame.type) == (512, 512,
                                                               rtc.VideoBufferType.RGB24)
            record.video.append(time.perf_counter())
            super().capture_frame(frame, **kw)

    monkeypatch.setattr(rtc, "AudioSource", AudioSource)
    monkeypatch.setattr(rtc, "VideoSource", VideoSource)
    return record


def speech(seconds: float, rate: int = TTS_RATE, frame_ms: int = 20) -> list[rtc.AudioFrame]:
    """A voiced tone in TTS-sized frames (the last one shorter when it does not divide)."""
    n = round(seconds * rate)
    t = np.arange(n) / rate
    pcm = (np.sin(2 * np.pi * 180 * t) * (0.5 + 0.3 * np.sin(2 * np.pi * 3 * t)) * 16000
           ).astype(np.int16)
    step = rate * frame_ms // 1000
    return [rtc.AudioFrame(pcm[i:i + step].tobytes(), rate, 1, pcm[i:i + step].size)
            for i in range(0, n, step)]


class PlaybackLog:
    """The agent-side events of a DataStreamAudioOutput, as the agent sees them."""

    def __init__(self, output: Any) -> None:
        self.started: list[float] = []
        self.finished: list[tuple[float, Any]] = []
        self._wake = asyncio.Event()
        output.on("playback_started", lambda ev: self._add(self.started, time.perf_counter()))
        output.on("playback_finished",
                  lambda ev: self._add(self.finished, (time.perf_counter(), ev)))

    def _add(self, where: list[Any], item: Any) -> None:
        where.append(item)
        self._wake.set()

    async def wait(self, cond: Callable[[], bool], within: float = 8.0) -> None:
        async def until() -> None:
            while not cond():
                self._wake.clear()
                await self._wake.wait()
        await asyncio.wait_for(until(), within)


async def say(output: Any, seconds: float) -> None:
    for frame in speech(seconds):
        await output.capture_frame(frame)
    output.flush()


async def eventually(cond: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.perf_counter() + within
    while not cond():
        assert time.perf_counter() < deadline, "timed out"
        await asyncio.sleep(0.02)


def loud(block: np.ndarray) -> bool:
    return float(np.abs(block.astype(np.float32)).mean()) > 300


# ---------------------------------------------------------------------- tests
def test_agent_side_mints_publish_on_behalf_token_and_asks_the_server(unused_tcp_port: int
                                                                      ) -> None:
    """Remote mode: the token, the reroute of the agent's audio, the POST and the DELETE."""
    from aiohttp import web

    requests: list[tuple[str, str, dict[str, Any] | None, str]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        requests.append((request.method, request.path, body,
                         request.headers.get("Authorization", "")))
        if request.method == "POST":
            return web.json_response({"id": "sess-1"}, status=201)
        return web.Response(status=204)

    async def scenario() -> tuple[Any, Any]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
        try:
            sfu = FakeSFU()
            room = sfu.room()
            await room.connect(sfu.url, agent_token())
            session = AgentSession()
            avatar = VivifyAvatarSession(server_url=f"http://127.0.0.1:{unused_tcp_port}",
                                         server_token="srv-token", avatar="default")
            await avatar.start(session, room, livekit_url=sfu.url, livekit_api_key=KEY,
                               livekit_api_secret=SECRET)
            output = session.output.audio
            await avatar.aclose()
            # `vivify livekit-worker --server` asks the same way (standard library HTTP)
            answer = await asyncio.to_thread(ask_server, f"http://127.0.0.1:{unused_tcp_port}",
                                             "srv-token", sfu.url, avatar.token, "default")
            assert answer == {"id": "sess-1"}
            return avatar, output
        finally:
            await runner.cleanup()

    avatar, output = asyncio.run(asyncio.wait_for(scenario(), 20))
    claims = api.TokenVerifier(KEY, SECRET).verify(avatar.token)
    assert claims.identity == "vivify-avatar" and claims.kind == "agent"
    assert claims.attributes == {"lk.publish_on_behalf": AGENT}
    assert claims.video.room == "room-1" and claims.video.room_join
    assert claims.video.can_publish and claims.video.can_publish_data
    assert isinstance(output, DataStreamAudioOutput)
    assert output._destination_identity == "vivify-avatar" and output.sample_rate == 16000
    post, delete, cli_post = requests
    assert cli_post == post
    assert post[:2] == ("POST", "/v1/livekit/sessions") and post[3] == "Bearer srv-token"
    assert post[2] == {"url": FakeSFU.url, "token": avatar.token, "avatar": "default"}
    assert delete[:2] == ("DELETE", "/v1/sessions/sess-1")


@pytest.fixture
def unused_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_protocol_in_process(face_models: Path, tmp_path: Path, published: Published) -> None:
    """Audio streams in → A/V out in sync; segment end → exact position; back-to-back
    segments → one answer each, in order; clear_buffer → interrupted, idle face."""
    sfu = FakeSFU()

    async def scenario() -> dict[str, Any]:
        avatars = await LocalAvatars.start(home=tmp_path)
        try:
            room = sfu.room()
            await room.connect(sfu.url, agent_token())
            session = AgentSession()
            avatar = VivifyAvatarSession(avatars=avatars, room_factory=sfu.room)
            await avatar.start(session, room, livekit_url=sfu.url, livekit_api_key=KEY,
                               livekit_api_secret=SECRET)
            await avatar.wait_for_join(timeout=10)  # its video track is in the room
            worker: LiveKitAvatarWorker = avatar.worker  # type: ignore[assignment]
            output = session.output.audio
            log = PlaybackLog(output)
            out: dict[str, Any] = {"worker": worker, "log": log}

            # 1. one utterance of 1.00 s
            live0 = worker.stats.live_frames_published
            audio0 = len(published.audio)
            await say(output, 1.0)
            await log.wait(lambda: len(log.finished) == 1)
            await asyncio.sleep(0.3)  # the last pairs leave the A/V synchronizer
            out["live_frames_1"] = worker.stats.live_frames_published - live0
            out["loud_audio_1"] = sum(loud(a) for _, a in published.audio[audio0:])

            # 2. two utterances back to back (0.52 s is not whole frames: padded, exact)
            await say(output, 0.52)
            await say(output, 0.3)
            await log.wait(lambda: len(log.finished) == 3)

            # 3. interrupted after ~0.6 s of a 3 s utterance
            await say(output, 3.0)
            await log.wait(lambda: len(log.started) == 4)
            await asyncio.sleep(0.6)
            out["clear_at"] = time.perf_counter()
            output.clear_buffer()
            await log.wait(lambda: len(log.finished) == 4)
            await eventually(lambda: bool(worker.stats.interrupt_to_idle_ms))
            await asyncio.sleep(0.3)

            # 4. speaking again after the interrupt
            out["said_again_at"] = time.perf_counter()
            await say(output, 0.4)
            await log.wait(lambda: len(log.finished) == 5)
            out["elapsed"] = published.video[-1] - published.video[0]
            out["tracks"] = list(sfu.member("room-1", "vivify-avatar")
                                 .local_participant.track_publications.values())
            await avatar.aclose()
            await asyncio.wait_for(worker.closed.wait(), 5)
            out["avatar_left"] = sfu.member("room-1", "vivify-avatar") is None
            out["session_closed"] = worker.session.closed
            return out
        finally:
            await avatars.aclose()

    out = asyncio.run(asyncio.wait_for(scenario(), 45))
    log, worker = out["log"], out["worker"]
    finished = [ev for _, ev in log.finished]
    # exact positions: the seconds the agent streamed; the interrupt at a frame boundary
    assert [(ev.playback_position, ev.interrupted) for ev in finished[:3]] == [
        (1.0, False), (0.52, False), (0.3, False)]
    cut = finished[3]
    assert cut.interrupted and 0.4 <= cut.playback_position <= 1.2
    assert round(cut.playback_position * 1000) % 40 == 0
    assert (finished[4].playback_position, finished[4].interrupted) == (0.4, False)
    assert len(log.started) == 5  # lk.playback_started once per utterance, before its end
    assert all(s < f for s, (f, _) in zip(log.started, log.finished, strict=True))
    # 1 s of speech = 25 frames carrying it, and 25 published 40 ms blocks that are voiced
    assert out["live_frames_1"] == 25 and 24 <= out["loud_audio_1"] <= 26
    # A/V published together: as many frames as audio blocks at every moment (± the
    # synchronizer's queue), at 25 fps
    assert published.counts_apart() <= 4
    assert abs(len(published.video) - len(published.audio)) <= 3
    assert abs(len(published.video) / out["elapsed"] - 25) < 2.5
    # the face is idle within 100 ms of lk.clear_buffer, and the voice stops with it
    assert worker.stats.interrupt_to_idle_ms[0] <= 100
    after = [a for t, a in published.audio if out["clear_at"] < t < out["said_again_at"]]
    quiet_from = next(i for i, a in enumerate(after) if not loud(a))
    assert quiet_from <= 2 and not any(loud(a) for a in after[quiet_from:])  # ≤ 80 ms more
    # the protocol as seen on the wire
    calls = [(c.caller, c.destination, c.method) for c in sfu.rpc_log]
    assert calls.count((AGENT, "vivify-avatar", "lk.clear_buffer")) == 1
    assert calls.count(("vivify-avatar", AGENT, "lk.playback_started")) == 5
    assert calls.count(("vivify-avatar", AGENT, "lk.playback_finished")) == 5
    assert all(c.result == "ok" for c in sfu.rpc_log)
    assert ("vivify-avatar", "lk.clear_buffer") in sfu.registrations
    assert (AGENT, "lk.playback_finished") in sfu.registrations
    streams = [s for s in sfu.streams if s.info.topic == "lk.audio_stream"]
    assert len(streams) == 5 and all(s.destinations == ["vivify-avatar"] for s in streams)
    assert streams[0].info.attributes == {"sample_rate": "24000", "num_channels": "1"}
    assert sum(len(c) for c in streams[0].chunks) == 24000 * 2
    kinds = sorted((p.kind, p.source) for p in out["tracks"])
    assert kinds == sorted([(rtc.TrackKind.KIND_AUDIO, rtc.TrackSource.SOURCE_MICROPHONE),
                            (rtc.TrackKind.KIND_VIDEO, rtc.TrackSource.SOURCE_CAMERA)])
    assert out["avatar_left"] and out["session_closed"]


def test_route_inside_vivify_serve(face_models: Path, tmp_path: Path) -> None:
    """POST /v1/livekit/sessions joins the room on the server's own engines; the usual
    session routes apply; errors are the API's."""
    import httpx

    from vivify.streamer.server.config import ServerConfig
    from vivify.streamer.server.serve import build

    sfu = FakeSFU()
    bearer = {"Authorization": "Bearer srv-token"}

    async def scenario() -> dict[str, Any]:
        app, manager = build(ServerConfig(max_sessions=2, session_idle_timeout=0,
                                          token="srv-token"), home=tmp_path)
        app.state.livekit_room_factory = sfu.room
        out: dict[str, Any] = {}
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://vivify") as http:
                agent = sfu.room()
                await agent.connect(sfu.url, agent_token())
                token = mint_avatar_token(api_key=KEY, api_secret=SECRET, room="room-1",
                                          avatar_identity="vivify-avatar", agent_identity=AGENT)
                body = {"url": sfu.url, "token": token}
                path = "/v1/livekit/sessions"
                out["no_token"] = (await http.post(path, json=body)).status_code
                out["bad_body"] = (await http.post(path, json={"url": "x"}, headers=bearer)
                                   ).json()
                out["bad_jwt"] = (await http.post(path, headers=bearer, json={
                    "url": sfu.url, "token": "not-a-jwt-but-long-enough"})).json()
                out["unknown_avatar"] = (await http.post(path, headers=bearer, json={
                    **body, "avatar": "nobody"})).status_code
                out["unreachable"] = (await http.post(path, headers=bearer, json={
                    **body, "url": "wss://elsewhere.test"})).json()
                out["sessions_after_errors"] = len(manager.sessions)
                created = await http.post(path, json=body, headers=bearer)
                out["created"] = (created.status_code, created.json())
                sid = created.json()["id"]
                out["again"] = (await http.post(path, json=body, headers=bearer)).json()

                output = DataStreamAudioOutput(agent, destination_identity="vivify-avatar",
                                               wait_remote_track=rtc.TrackKind.KIND_VIDEO,
                                               wait_playback_start=True)
                log = PlaybackLog(output)
                await say(output, 0.4)
                await log.wait(lambda: len(log.finished) == 1)
                out["finished"] = log.finished[0][1]
                out["stats"] = (await http.get(f"/v1/sessions/{sid}", headers=bearer)).json()

                out["deleted"] = (await http.delete(f"/v1/sessions/{sid}", headers=bearer)
                                  ).status_code
                await eventually(lambda: sfu.member("room-1", "vivify-avatar") is None)
                out["gone"] = (await http.get(f"/v1/sessions/{sid}", headers=bearer)).status_code

                # a new avatar for the same agent; it ends when the agent leaves the room
                again = await http.post(path, json=body, headers=bearer)
                out["rejoined"] = again.status_code
                await agent.disconnect()
                await eventually(lambda: not manager.sessions)
                out["left_with_agent"] = sfu.member("room-1", "vivify-avatar") is None
        return out

    out = asyncio.run(asyncio.wait_for(scenario(), 40))
    assert out["no_token"] == 401
    assert out["bad_body"]["error"]["code"] == "invalid_request"
    assert out["bad_jwt"]["error"]["code"] == "bad_token"
    assert out["unknown_avatar"] == 404
    assert out["unreachable"]["error"]["code"] == "livekit_unreachable"
    assert out["sessions_after_errors"] == 0  # a failed join leaves no session behind
    status, created = out["created"]
    assert status == 201 and created["identity"] == "vivify-avatar"
    assert created["agent"] == AGENT and created["room"] == "room-1"
    assert out["again"]["error"]["code"] == "already_joined"
    assert (out["finished"].playback_position, out["finished"].interrupted) == (0.4, False)
    assert out["stats"]["id"] == created["id"] and out["stats"]["mode"] == "broadcast"
    assert out["stats"]["media"]["live_slots"] >= 10  # 0.4 s of speech played there
    assert out["deleted"] == 204 and out["gone"] == 404
    assert out["rejoined"] == 201 and out["left_with_agent"]


def test_cli_help_and_missing_extra(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from vivify.streamer.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["livekit-worker", "--help"])
    assert exc.value.code == 0
    assert "--url" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "livekit.agents.voice.avatar", None)  # "not installed"
    code = main(["livekit-worker", "--url", "wss://x.test", "--token", "t" * 20])
    assert code == 2
    assert "pip install '.[livekit]'" in capsys.readouterr().err
