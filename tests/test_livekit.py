"""LiveKit Agents avatar protocol (streamer/integrations/livekit_*.py), against a fake room.

No LiveKit server can run here (none on PyPI, npm or Debian), so the room is faked
(tests/support/livekit_room.py: in-process rooms that check their JWTs with livekit-api,
route RPCs and byte streams and record every call, stream and track). Everything else is
real: the agent's
``DataStreamAudioOutput``, the avatar's ``DataStreamAudioReceiver``, the ``livekit.rtc``
sources, tracks, frames and ``AVSynchronizer`` (the rtc SDK runs locally), the engines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("livekit.agents")

from livekit import api, rtc
from livekit.agents import AgentSession
from livekit.agents.voice.avatar import DataStreamAudioOutput

from tests.support.livekit_room import AGENT, KEY, SECRET, FakeSFU, agent_token, as_room
from tests.support.net import free_port
from tests.support.waiting import eventually, grown_by
from vivify.streamer.integrations.avatar_session import LocalAvatars
from vivify.streamer.integrations.livekit_agent import (
    VivifyAvatarSession,
    mint_avatar_token,
)
from vivify.streamer.integrations.livekit_worker import LiveKitAvatarWorker, ask_server

pytestmark = pytest.mark.slow

TTS_RATE = 24000  # what a TTS sends; the worker resamples to the engines' 16 kHz


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
            session: AgentSession[Any] = AgentSession()
            avatar = VivifyAvatarSession(server_url=f"http://127.0.0.1:{unused_tcp_port}",
                                         server_token="srv-token", avatar="default")
            await avatar.start(session, as_room(room), livekit_url=sfu.url,
                               livekit_api_key=KEY, livekit_api_secret=SECRET)
            output = session.output.audio
            await avatar.aclose()
            assert avatar.token
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
    video = claims.video
    assert video is not None and video.room == "room-1" and video.room_join
    assert video.can_publish and video.can_publish_data
    assert isinstance(output, DataStreamAudioOutput)
    assert output._destination_identity == "vivify-avatar" and output.sample_rate == 16000
    post, delete, cli_post = requests
    assert cli_post == post
    assert post[:2] == ("POST", "/v1/livekit/sessions") and post[3] == "Bearer srv-token"
    assert post[2] == {"url": FakeSFU.url, "token": avatar.token, "avatar": "default"}
    assert delete[:2] == ("DELETE", "/v1/sessions/sess-1")


@pytest.fixture
def unused_tcp_port() -> int:
    return free_port()


def test_protocol_in_process(face_models: Path, tmp_path: Path, published: Published) -> None:
    """Audio streams in → A/V out in sync; segment end → exact position; back-to-back
    segments → one answer each, in order; clear_buffer → interrupted, idle face."""
    sfu = FakeSFU()

    async def scenario() -> dict[str, Any]:
        avatars = await LocalAvatars.start(home=tmp_path)
        try:
            room = sfu.room()
            await room.connect(sfu.url, agent_token())
            session: AgentSession[Any] = AgentSession()
            avatar = VivifyAvatarSession(avatars=avatars, room_factory=sfu.room)
            await avatar.start(session, as_room(room), livekit_url=sfu.url,
                               livekit_api_key=KEY, livekit_api_secret=SECRET)
            await avatar.wait_for_join(timeout=10)  # its video track is in the room
            worker: LiveKitAvatarWorker = avatar.worker  # type: ignore[assignment]
            output = session.output.audio
            assert output is not None
            log = PlaybackLog(output)
            out: dict[str, Any] = {"worker": worker, "log": log}

            # 1. one utterance of 1.00 s
            live0 = worker.stats.live_frames_published
            audio0 = len(published.audio)
            await say(output, 1.0)
            await log.wait(lambda: len(log.finished) == 1)
            # the last pairs leave the A/V synchronizer: 8 more blocks (320 ms) published
            await eventually(grown_by(lambda: len(published.audio), 8))
            out["live_frames_1"] = worker.stats.live_frames_published - live0
            out["loud_audio_1"] = sum(loud(a) for _, a in published.audio[audio0:])

            # 2. two utterances back to back (0.52 s is not whole frames: padded, exact)
            await say(output, 0.52)
            await say(output, 0.3)
            await log.wait(lambda: len(log.finished) == 3)

            # 3. interrupted after 0.6 s (15 frames) of a 3 s utterance has played
            live3 = worker.stats.live_frames_published
            await say(output, 3.0)
            await log.wait(lambda: len(log.started) == 4)
            await eventually(lambda: worker.stats.live_frames_published - live3 >= 15)
            out["clear_at"] = time.perf_counter()
            out["live_at_clear"] = worker.stats.live_frames_published
            output.clear_buffer()
            await log.wait(lambda: len(log.finished) == 4)
            await eventually(lambda: bool(worker.stats.interrupt_to_idle_ms))
            out["live_after_clear"] = worker.stats.live_frames_published - out["live_at_clear"]
            # the voice after the interrupt: 8 blocks (320 ms) published since the first idle
            await eventually(grown_by(lambda: len(published.audio), 8))

            # 4. speaking again after the interrupt
            out["said_again_at"] = time.perf_counter()
            await say(output, 0.4)
            await log.wait(lambda: len(log.finished) == 5)
            out["elapsed"] = published.video[-1] - published.video[0]
            member = sfu.member("room-1", "vivify-avatar")
            assert member is not None
            out["tracks"] = list(member.local_participant.track_publications.values())
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
    # synchronizer's queue), paced, never faster than 25 fps (how close to 25 fps a machine
    # keeps up is measured by make bench: bench/loopback.py, "delivered fps")
    assert published.counts_apart() <= 4
    assert abs(len(published.video) - len(published.audio)) <= 3
    assert len(published.video) / out["elapsed"] < 25 + 2.5
    # the face is idle within 2 frames (80 ms of media) of lk.clear_buffer, and the voice
    # stops with it (the wall-clock latency is measured by make bench: bench/loopback.py)
    assert worker.stats.interrupt_to_idle_ms and out["live_after_clear"] <= 2
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

                output = DataStreamAudioOutput(as_room(agent), destination_identity="vivify-avatar",
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
