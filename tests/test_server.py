"""The streaming server end to end: a real uvicorn server, a real aiortc peer on loopback,
driven through the project's API client (vivify.streamer.client).

No test sleeps for a fixed time or bounds a rate: each waits for what it needs (frames
received, speech played, an event) with a generous timeout; rates and latencies are measured
by ``make bench``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from aiortc import RTCPeerConnection
from aiortc.contrib.media import MediaPlayer

from tests.support.images import png_bytes
from tests.support.live_server import TOKEN, LiveServer
from tests.support.rtc import TrackRecorder
from tests.support.video import mouth_activity
from tests.support.waiting import eventually, grown_by, wait_until
from vivify.engines.audio.audio_io import float_to_pcm16, load_audio
from vivify.engines.provenance.watermark import detect_frames
from vivify.streamer.client import ApiClient, offer_peer
from vivify.streamer.rtc.peer import PassThroughAudioBuffer

pytestmark = pytest.mark.slow
MEDIA_TIMEOUT_S = 60.0  # a stuck-test bound for media to arrive; never a speed requirement


def api(server: LiveServer) -> httpx.Client:
    """Raw HTTP, for the tests of the wire itself (status codes, error bodies)."""
    return httpx.Client(base_url=server.url, headers=server.headers, timeout=30)


def _client(server: LiveServer) -> ApiClient:
    return ApiClient(server.url, server.token)


async def _connect(client: ApiClient, body: dict[str, Any], wav: Path | None
                   ) -> tuple[RTCPeerConnection, dict[str, Any], TrackRecorder]:
    """A session (mirror when ``wav`` is its microphone, else a receive-only broadcast peer)
    with a recorder already pulling what comes back."""
    pc = offer_peer("mirror", MediaPlayer(str(wav)).audio) if wav else offer_peer("broadcast")
    data = await client.create_session(pc, body)
    return pc, data, TrackRecorder(pc)


async def _viewer(client: ApiClient, session_id: str) -> tuple[RTCPeerConnection, TrackRecorder]:
    pc = offer_peer("viewer")
    await client.add_viewer(session_id, pc)
    return pc, TrackRecorder(pc)


async def _until(cond: Callable[[], bool], what: str) -> None:
    await eventually(cond, MEDIA_TIMEOUT_S, what)


def test_health_metrics_and_docs(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        assert "vivify_sessions" in c.get("/metrics").text
        assert c.get("/openapi.json").json()["info"]["title"] == "Vivify"
        assert c.get("/").status_code == 200


def test_auth_required_and_refused(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.get("/v1/avatars")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = c.get("/v1/avatars", headers={"authorization": "Bearer nope"})
        assert r.status_code == 401
    with api(server) as c:
        assert any(a["id"] == "default" for a in c.get("/v1/avatars").json()["avatars"])


def test_avatar_upload_errors_and_lifecycle(server: LiveServer, astronaut: np.ndarray) -> None:
    yes = {"consent": "true", "consent_by": "Test Uploader"}
    portrait = png_bytes(astronaut[:, ::-1].copy())
    with api(server) as c:
        r = c.post("/v1/avatars", files={"image": ("a.png", portrait, "image/png")})
        assert r.status_code == 400 and r.json()["error"]["code"] == "consent_required"
        r = c.post("/v1/avatars", data={"consent": "no"},
                   files={"image": ("a.png", portrait, "image/png")})
        assert r.status_code == 400 and r.json()["error"]["code"] == "consent_required"
        r = c.post("/v1/avatars", data=yes,
                   files={"image": ("notes.txt", b"hello", "text/plain")})
        assert r.status_code == 422 and r.json()["error"]["code"] == "not_an_image"
        r = c.post("/v1/avatars", data=yes,
                   files={"image": ("big.png", b"\x89PNG" + bytes(3 * 2**20), "image/png")})
        assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large"
        gradient = np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (256, 1, 3))
        r = c.post("/v1/avatars", data=yes,
                   files={"image": ("g.png", png_bytes(gradient), "image/png")})
        assert r.status_code == 422 and r.json()["error"]["code"] == "no_face"
        r = c.post("/v1/avatars", data=yes, files={"image": ("a.png", portrait, "image/png")})
        assert r.status_code == 201, r.text
        avatar = r.json()["id"]
        consent = c.get(f"/v1/avatars/{avatar}").json()["consent"]
        assert consent["by"] == "Test Uploader" and consent["address"] == "127.0.0.1"
        assert consent["at"].endswith("Z") and "right to use" in consent["statement"]
        assert c.get("/v1/avatars/default").json()["consent"]["statement"].startswith("public")
        assert c.get(f"/v1/avatars/{avatar}").status_code == 200
        assert c.delete(f"/v1/avatars/{avatar}").status_code == 204
        assert c.get(f"/v1/avatars/{avatar}").status_code == 404
        assert c.delete("/v1/avatars/default").status_code == 409


def test_session_request_errors(server: LiveServer) -> None:
    with api(server) as c:
        r = c.post("/v1/sessions", json={"avatar": "nobody", "mode": "broadcast"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_avatar"
        r = c.post("/v1/sessions", json={"mode": "mirror",
                                         "offer": {"type": "offer", "sdp": "v=0 garbage"}})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_sdp"
        r = c.post("/v1/sessions", json={"mode": "sideways"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
        r = c.post("/v1/sessions", content=b"{not json", headers={"content-type":
                                                                   "application/json"})
        assert r.status_code == 422
        assert c.get("/v1/sessions/nope").status_code == 404
    assert not server.manager.sessions  # nothing leaked from the failures


def test_mirror_call_returns_lip_synced_video_and_audio(server: LiveServer, speech: Path) -> None:
    async def scenario() -> dict[str, Any]:
        async with _client(server) as client:
            pc, data, rec = await _connect(client, {"mode": "mirror", "video": {"codec": "vp8"}},
                                           speech)
        session = server.manager.get(data["id"])
        # Most of the speech (≈4 s) has played and come back: 3 s of it, 4 s of video.
        await _until(lambda: session.media.stats.live_slots >= 75 and len(rec.video) >= 100,
                     "3 s of the speech played and 4 s of video received")
        stats = session.stats()
        # aiortc's audio receiver holds 4 packets (80 ms) by default; the server holds none.
        assert session.pc is not None
        buffers = [getattr(r, "_RTCRtpReceiver__jitter_buffer", None)
                   for r in session.pc.getReceivers() if r.track and r.track.kind == "audio"]
        assert [type(b) for b in buffers] == [PassThroughAudioBuffer]
        await rec.stop()
        await pc.close()
        return {"video": rec.video, "audio": rec.audio, "stats": stats, "id": data["id"]}

    got = asyncio.run(scenario())
    frames = got["video"]
    assert frames and frames[0].shape == (512, 512, 3)
    activity = mouth_activity(frames)
    assert activity.max() > 3.0  # the mouth moved while the speech played
    # Every streamed frame is watermarked with this session's hash, through VP8 and back.
    found = detect_frames(frames[:75])
    assert found.present and found.payload is not None
    assert found.payload.session_hex == got["stats"]["provenance"]["watermark"]
    assert got["stats"]["provenance"]["label"] == "AI-generated"  # on unless asked otherwise
    audio = np.concatenate(got["audio"]).astype(np.float32)
    assert np.abs(audio).max() > 1000  # the same speech came back
    assert got["stats"]["media"]["live_slots"] >= 75
    # The peer left: the session is cleaned up (its connection closed).
    wait_until(lambda: got["id"] not in server.manager.sessions, 15, "the session to end")


def test_broadcast_with_two_viewers_driven_by_websocket(server: LiveServer, speech: Path) -> None:
    pcm = float_to_pcm16(load_audio(speech))

    async def scenario() -> tuple[list[list[np.ndarray]], list[dict[str, Any]], dict[str, Any]]:
        async with _client(server) as client:
            sid = (await client.create_session(None, {"mode": "broadcast"}))["id"]
            viewers = [await _viewer(client, sid) for _ in range(2)]
            events: list[dict[str, Any]] = []

            def seen(kind: str, code: str | None = None) -> bool:
                return any(e["type"] == kind and (code is None or e.get("code") == code)
                           for e in events)

            # The token as a query parameter (what a browser's WebSocket can send); the
            # client's header is the other way in (test_interrupt_returns_to_idle).
            url = f"ws://127.0.0.1:{server.port}/v1/sessions/{sid}/ws?token={TOKEN}"
            async with websockets.connect(url) as ws:
                async def listen() -> None:
                    with contextlib.suppress(Exception):
                        async for m in ws:
                            events.append(json.loads(m))
                listener = asyncio.create_task(listen())
                # Both viewers watch before the speech starts, so each sees all of it.
                await _until(lambda: all(len(r.video) >= 3 for _, r in viewers),
                             "both viewers' first frames")
                for i in range(0, len(pcm), 32000):
                    await ws.send(pcm[i:i + 32000])
                await ws.send(json.dumps({"type": "segment_end"}))
                await _until(lambda: seen("playback_finished")
                             and all(len(r.video) > 75 for _, r in viewers),
                             "the speech to play out to both viewers")
                await ws.send(b"\x01\x02\x03")  # odd length: not PCM s16
                await ws.send("{nope")
                await ws.send(json.dumps({"type": "dance"}))
                await ws.send(json.dumps({"type": "controls", "emotion": "happy",
                                          "gaze": [0.5, 0]}))
                await ws.send(json.dumps({"type": "stats"}))
                await _until(lambda: seen("error", "bad_audio") and seen("error", "bad_message")
                             and seen("stats"), "the answers to the bad messages and stats")
                listener.cancel()
            stats = server.manager.get(sid).stats()
            for pc, rec in viewers:
                await rec.stop()
                await pc.close()
            assert await client.delete_session(sid) is True
        return [rec.video for _, rec in viewers], events, stats

    received, events, stats = asyncio.run(scenario())
    types = [e["type"] for e in events]
    assert "playback_started" in types and "playback_finished" in types
    finished = next(e for e in events if e["type"] == "playback_finished")
    assert finished["interrupted"] is False and finished["position_ms"] > 1000
    errors = [e for e in events if e["type"] == "error"]
    assert {e["code"] for e in errors} >= {"bad_audio", "bad_message"}
    assert any(e["type"] == "stats" for e in events)
    assert stats["viewers"] == 2
    # One shared encode for both viewers, not one per viewer.
    encoded = stats["viewer_encoder"]["frames_encoded"]
    assert encoded >= 75 and encoded <= stats["media"]["slots_played"]
    for frames in received:
        assert len(frames) > 75 and mouth_activity(frames).max() > 3.0


def test_interrupt_returns_to_idle(server: LiveServer, speech: Path) -> None:
    pcm = float_to_pcm16(load_audio(speech))
    speech_ms = len(pcm) // 32  # s16 at 16 kHz: 32 bytes per ms

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        async with _client(server) as client:
            sid = (await client.create_session(None, {"mode": "broadcast"}))["id"]
            session = server.manager.get(sid)
            stats = session.media.stats
            events: list[dict[str, Any]] = []
            async with client.websocket(sid) as ws:  # the token in the header
                for i in range(0, len(pcm), 32000):
                    await ws.send(pcm[i:i + 32000])
                await _until(lambda: stats.live_slots >= 25, "1 s of the speech to play")
                live_before = stats.live_slots
                await ws.send(json.dumps({"type": "interrupt"}))
                while not events or events[-1]["type"] != "playback_finished":
                    events.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
                await _until(grown_by(lambda: stats.slots_played, 8),
                             "the slots in flight at the interrupt to play")
                after_settle = stats.live_slots
                await _until(grown_by(lambda: stats.slots_played, 25), "1 s more of idle")
                live_after = stats.live_slots
            await session.aclose("test over")
        return events, {"before": live_before, "settle": after_settle, "after": live_after}

    events, counts = asyncio.run(scenario())
    assert [e["type"] for e in events] == ["playback_started", "playback_finished"]
    position = events[-1]["position_ms"]
    assert events[-1]["interrupted"] is True
    # It stopped where it was when interrupted: after what had played, well before the end.
    assert (counts["before"] - 2) * 40 <= position < speech_ms - 500, (position, speech_ms)
    assert counts["after"] == counts["settle"]  # nothing of the old speech plays after it


def test_capacity_answers_503(face_models: Path, tmp_path: Path) -> None:
    with LiveServer(tmp_path, None, max_sessions=1) as live, api(live) as c:
        assert c.post("/v1/sessions", json={"mode": "broadcast"}).status_code == 201
        r = c.post("/v1/sessions", json={"mode": "broadcast"})
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["error"]["code"] == "server_full"


def test_three_concurrent_mirror_sessions(server: LiveServer, speech: Path) -> None:
    async def scenario() -> list[list[np.ndarray]]:
        async with _client(server) as client:
            peers = [await _connect(client, {"mode": "mirror"}, speech) for _ in range(3)]
        await _until(lambda: all(len(rec.video) >= 100 for _, _, rec in peers),
                     "4 s of video on every peer")
        for pc, _, rec in peers:
            await rec.stop()
            await pc.close()
        return [rec.video for _, _, rec in peers]

    # Three servers' worth of encoding plus three clients' decoding share these cores, so this
    # checks that every session keeps flowing and speaking; rates are measured in bench/.
    for frames in asyncio.run(scenario()):
        assert mouth_activity(frames).max() > 3.0


def _server_tasks(server: LiveServer) -> int:
    loop = server.app.state.loop
    fut = asyncio.run_coroutine_threadsafe(_count_tasks(), loop)
    return fut.result(timeout=5)


async def _count_tasks() -> int:
    return len(asyncio.all_tasks())


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_connect_disconnect_cycles_leak_nothing(server: LiveServer, speech: Path) -> None:
    """Sessions, tasks and threads return to their baseline; memory stays flat."""
    wait_until(lambda: not server.manager.sessions, 15, "the earlier tests' sessions to end")

    async def mirror_cycle() -> None:
        async with _client(server) as client:
            pc, data, rec = await _connect(client, {"mode": "mirror"}, speech)
            await _until(lambda: len(rec.video) >= 3, "the call's first frames")
            await rec.stop()
            await pc.close()
            await client.delete_session(data["id"])  # False if it had ended with its peer

    def broadcast_cycle(c: httpx.Client) -> None:
        sid = c.post("/v1/sessions", json={"mode": "broadcast"}).json()["id"]
        assert c.delete(f"/v1/sessions/{sid}").status_code == 204

    with api(server) as c:
        # Warm-up: codecs, caches, and the worker threads' malloc heaps. glibc raises its mmap
        # threshold after the first big frees, so a fresh server's heaps grow once (measured
        # +58 MB over its first 100 sessions, then +2.6, +0.4, 0, +1.5, 0 MB per 100).
        for _ in range(60):
            broadcast_cycle(c)
        for _ in range(2):
            asyncio.run(mirror_cycle())
        wait_until(lambda: not server.manager.sessions, 15, "the warm-up sessions to end")
        tasks0, threads0, rss0 = _server_tasks(server), threading.active_count(), _rss_mb()
        for _ in range(100):
            broadcast_cycle(c)
        for _ in range(10):
            asyncio.run(mirror_cycle())
    # Closing finishes in the background (peers, encoders, threads): wait for the baseline.
    wait_until(lambda: (not server.manager.sessions and _server_tasks(server) <= tasks0 + 2
                        and threading.active_count() <= threads0 + 2), 30,
               f"sessions, tasks ({tasks0}) and threads ({threads0}) back to their baseline")
    assert _rss_mb() - rss0 < 60, f"RSS grew {_rss_mb() - rss0:.0f} MB over 110 sessions"


def test_sigterm_drains_sessions_and_exits_cleanly(face_models: Path, tmp_path: Path) -> None:
    """SIGTERM: each WebSocket hears ``session_closed`` before its 1012 close, the process
    exits 0, and the token its clients sent (``?token=`` in the logged path) is not logged."""
    from bench.harness.server import LiveServer as ServerProcess

    proc = ServerProcess(tmp_path, ["--max-sessions", "2"], TOKEN,
                         models=face_models.parent)  # a private home, the same models

    async def drain_over_websocket(session_id: str) -> tuple[dict[str, Any], int | None]:
        url = f"ws://127.0.0.1:{proc.port}/v1/sessions/{session_id}/ws?token={TOKEN}"
        async with websockets.connect(url) as ws:
            await ws.send('{"type":"stats"}')
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "stats"
            assert proc.proc is not None
            proc.proc.terminate()  # SIGTERM, as an operator's service manager sends it
            last = json.loads(await asyncio.wait_for(ws.recv(), 10))
            with contextlib.suppress(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            return last, ws.close_code

    proc.start(timeout=90)
    try:
        r = httpx.post(f"{proc.url}/v1/sessions", json={"mode": "broadcast"},
                       headers={"authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 201
        event, close_code = asyncio.run(drain_over_websocket(r.json()["id"]))
        assert proc.proc is not None
        assert proc.proc.wait(timeout=20) == 0, proc.log_tail(40)  # no second signal
    finally:
        proc.kill()
    out = proc.log_text()
    assert "closing: server shutting down" in out
    assert event["type"] == "error" and event["code"] == "session_closed", event
    assert close_code == 1012
    assert "token=[redacted]" in out and TOKEN not in out


def test_verify_endpoint_and_label_choice(server: LiveServer, astronaut: np.ndarray) -> None:
    """``POST /v1/verify`` answers like ``vivify verify``; ``label`` picks the visible label."""
    from vivify.engines.provenance.watermark import Watermarker, session_payload

    crop = np.ascontiguousarray(astronaut[:512, :512])
    marked = Watermarker(session_payload("api-verify")).apply(crop)
    with api(server) as c:
        r = c.post("/v1/verify", files={"file": ("m.png", png_bytes(marked), "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["marked"] is True and body["file"] == "m.png"
        assert body["session"] == session_payload("api-verify").session_hex
        r = c.post("/v1/verify", files={"file": ("p.png", png_bytes(crop), "image/png")})
        assert r.status_code == 200 and r.json()["marked"] is False
        r = c.post("/v1/verify", files={"file": ("x.mp4", b"\x00garbage" * 100, "video/mp4")})
        assert r.status_code == 422 and r.json()["error"]["code"] == "unreadable_media"
        r = c.post("/v1/sessions", json={"mode": "broadcast", "label": False})
        assert r.status_code == 201
        assert r.json()["provenance"]["label"] is None and r.json()["provenance"]["watermark"]
        assert c.delete(f"/v1/sessions/{r.json()['id']}").status_code == 204
    with httpx.Client(base_url=server.url, timeout=10) as c:  # no token: refused like the rest
        assert c.post("/v1/verify", files={"file": ("m.png", b"x", "image/png")}
                      ).status_code == 401


def test_learned_driver_sessions_share_generator_calls(face_models: Path, tmp_path: Path,
                                                       speech: Path) -> None:
    """``--driver learned``: two agent-driven sessions, their windows through one batcher."""
    pcm = float_to_pcm16(load_audio(speech))[: 3 * 32000]  # bytes: 3 s of s16 at 16 kHz

    async def scenario(live: LiveServer) -> list[dict[str, Any]]:
        async with ApiClient(live.url) as client:
            ids = [(await client.create_session(None, {"mode": "broadcast"}))["id"]
                   for _ in range(2)]
            for sid in ids:
                async with client.websocket(sid) as ws:
                    for i in range(0, len(pcm), 16000):  # 0.5 s per message
                        await ws.send(pcm[i:i + 16000])
            media = [live.manager.get(sid).media.stats for sid in ids]
            batcher = live.manager.batcher
            assert batcher is not None
            # 2 × 3 s of speech + idle, W = 2 frames per window: ≥ 100 windows once played.
            await _until(lambda: all(m.live_slots >= 70 for m in media)
                         and batcher.stats.as_dict()["windows"] >= 2 * 50,
                         "both sessions' speech to play through the batcher")
            return [await client.session_stats(sid) for sid in ids]

    with LiveServer(tmp_path, None, driver="learned") as live:
        stats = asyncio.run(scenario(live))
        health = httpx.get(f"{live.url}/healthz").json()
    assert health["driver"] == "learned"
    batching = health["batching"]
    assert batching["windows"] >= 2 * 50  # 2 × 3 s of speech + idle, W = 2 frames per window
    assert batching["calls"] <= batching["windows"]
    for s in stats:  # all the speech played (pairs dropped under load: bench's business)
        assert s["media"]["live_slots"] >= 70, s["media"]


@pytest.mark.parametrize("driver", ["baseline", "learned"])
def test_graph_renderer_batches_every_sessions_frames(face_models: Path, tmp_path: Path,
                                                      speech: Path, astronaut: np.ndarray,
                                                      driver: str) -> None:
    """``--renderer graph``: three agent-driven sessions (two avatars) rendered by one batched
    renderer graph; a viewer gets watermarked frames; closing the sessions frees the bank. With
    the learned driver both batchers (generator windows, frames) share the workers."""
    pytest.importorskip("torch")
    from vivify.export.engine_export import export_renderer

    export_renderer(tmp_path / "engines")
    pcm = float_to_pcm16(load_audio(speech))[: 2 * 32000]  # 2 s
    mirrored = png_bytes(astronaut[:, ::-1].copy())

    async def scenario(live: LiveServer) -> tuple[list[dict[str, Any]], dict[str, Any],
                                                  list[np.ndarray]]:
        async with ApiClient(live.url) as client:
            avatar = (await client.upload_avatar(mirrored, filename="b.png",
                                                 consent_by="Test"))["id"]
            ids = [(await client.create_session(None, {"mode": "broadcast", "avatar": a}))["id"]
                   for a in ("default", avatar, "default")]
            pc, rec = await _viewer(client, ids[0])
            for sid in ids:
                async with client.websocket(sid) as ws:
                    for i in range(0, len(pcm), 16000):
                        await ws.send(pcm[i:i + 16000])
            media = [live.manager.get(sid).media.stats for sid in ids]
            render = live.manager.render_batcher
            assert render is not None
            # On the CPU the graph renders ~10–20 frames/s, far below the 75 the sessions ask
            # for, so their frames queue up while a call runs and go together: batches grow on
            # their own. (Each session has one frame in flight, so with N sessions overloaded
            # a batch holds up to N − 1.)
            await _until(lambda: len(rec.video) >= 10 and all(m.slots_played > 0 for m in media)
                         and render.stats.as_dict()["windows"] >= 20
                         and render.stats.as_dict()["largest"] >= 2,
                         "frames of every session rendered in shared batches")
            await rec.stop()
            await pc.close()
            health = await client.health()
            stats = [await client.session_stats(sid) for sid in ids]
            for sid in ids:
                assert await client.delete_session(sid) is True
            return stats, health, rec.video

    with LiveServer(tmp_path / "home", None, driver=driver, renderer="graph",
                    renderer_runtime="ort-cpu",
                    renderer_model=tmp_path / "engines" / "renderer.json") as live:
        stats, health, frames = asyncio.run(scenario(live))
        after = httpx.get(f"{live.url}/healthz").json()
    rend = health["renderer"]
    assert rend["kind"] == "graph" and rend["runtime"] == "ort-cpu", rend
    assert (health["batching"] is not None) == (driver == "learned")
    assert rend["avatars"] == 2 and rend["cpu_fallbacks"] == 0
    assert rend["batching"]["windows"] >= 20 and rend["batching"]["largest"] >= 2, rend
    assert all(s["media"]["slots_played"] > 0 for s in stats)
    assert after["renderer"]["avatars"] == 0
    assert len(frames) >= 10
    found = detect_frames(frames)
    assert found.present and found.payload is not None
    assert found.payload.session_hex == stats[0]["provenance"]["watermark"]
