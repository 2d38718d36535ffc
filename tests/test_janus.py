"""Viewers through an SFU (issue 18): a real Janus, a real server, an aiortc viewer via Janus.

Janus runs from its own generated config (``vivify.streamer.sfu.launcher.LocalJanus``):
VideoRoom and the HTTP transport only, loopback only, killed at the end of each test. The
server publishes each broadcast session once into a Janus room; the viewer subscribes there
and must receive the presenter's frames — the avatar, carrying this session's watermark.
Every wait is for a condition, bounded; nothing here measures speed (``make bench-cluster``).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.live_server import LiveServer
from tests.support.net import free_port
from tests.support.rtc import TrackRecorder
from tests.support.waiting import eventually
from vivify.engines.provenance.watermark import detect_frames
from vivify.streamer.client import ApiClient
from vivify.streamer.sfu.janus import JanusError, JanusSession
from vivify.streamer.sfu.launcher import LocalJanus, janus_binary
from vivify.streamer.sfu.videoroom import RoomSpec, create_room
from vivify.streamer.sfu.viewer import JanusViewer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(janus_binary() is None,
                       reason="the janus binary is missing (Debian package janus; make test "
                              "installs it)"),
]
MEDIA_TIMEOUT_S = 30.0  # a stuck-test bound for media to arrive; never a speed requirement
FRAMES = 75  # 3 s of video: enough for the watermark detector, ≥ 25 as the issue asks


@pytest.fixture
def janus() -> Iterator[LocalJanus]:
    with LocalJanus() as local:
        yield local


def _server(home: Path, janus: LocalJanus | None, url: str | None = None) -> LiveServer:
    return LiveServer(home, None, session_idle_timeout=0,
                      sfu_url=url or (janus.url if janus else None),
                      sfu_admin_key=janus.admin_key if janus else None)


async def _broadcast(client: ApiClient) -> dict[str, Any]:
    session = await client.create_session(None, {"mode": "broadcast"})
    stats = await client.session_stats(session["id"])
    assert session.get("sfu") == stats["sfu"]  # the create answer already says where to join
    return stats


SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"


def _not_blank(frame: np.ndarray) -> bool:
    """A face, not a black or flat frame: real contrast and a mid-range mean."""
    return bool(frame.std() > 20 and 20 < frame.mean() < 235)


def test_local_janus_loads_videoroom_and_http_only(janus: LocalJanus) -> None:
    info = httpx.get(f"{janus.url}/info", timeout=5).json()
    assert set(info["plugins"]) == {"janus.plugin.videoroom"}
    assert set(info["transports"]) == {"janus.transport.http"}
    assert info["ipv6"] is False and not info.get("ice-tcp")

    async def scenario() -> None:
        session = await JanusSession.create(janus.url)
        try:
            handle = await session.attach()
            with pytest.raises(JanusError):  # rooms need the admin key the server holds
                await create_room(handle, RoomSpec(), admin_key=None)
            room = await create_room(handle, RoomSpec(), admin_key=janus.admin_key)
            assert room > 0
            with pytest.raises(JanusError, match="No such feed"):
                await JanusViewer.open({"url": janus.url, "room": room, "feed": 12345})
        finally:
            await session.aclose()

    asyncio.run(scenario())


def test_viewer_receives_the_presenter_through_janus_then_janus_stops(
        face_models: Path, tmp_path: Path, janus: LocalJanus) -> None:
    async def scenario(live: LiveServer) -> tuple[list[np.ndarray], dict[str, Any],
                                                 dict[str, Any], dict[str, Any]]:
        async with ApiClient(live.url) as client:
            stats = await _broadcast(client)
            sfu = stats["sfu"]
            assert sfu["url"] == janus.url and sfu["state"] == "live", sfu
            viewer = await JanusViewer.open(sfu)
            recorder = TrackRecorder(viewer.pc)  # Janus's offer made the receivers
            await client.request("POST", f"/v1/sessions/{stats['id']}/speak", expect=(202,),
                                 json={"text": "Hello everyone, I am speaking through Janus."})
            await eventually(lambda: len(recorder.video) >= FRAMES, MEDIA_TIMEOUT_S,
                             f"{FRAMES} frames through Janus")
            await recorder.stop()
            frames, audio = list(recorder.video), list(recorder.audio)
            await viewer.aclose()
            session = live.manager.get(stats["id"])
            janus.stop()  # the SFU goes away under a live broadcast
            await eventually(lambda: session.sfu is not None and session.sfu.released.is_set(),
                             MEDIA_TIMEOUT_S, "the server to let go of its Janus publisher")
            after = await client.session_stats(stats["id"])
            fanout = session.fanout
            assert fanout is None or not fanout.tracks  # the publisher's track is released
            await client.delete_session(stats["id"])
        return frames, {"audio_frames": len(audio)}, stats, after

    with _server(tmp_path, janus) as live:
        frames, got, before, after = asyncio.run(scenario(live))
    assert len(frames) >= 25
    assert all(_not_blank(f) for f in frames[-25:])
    assert frames[0].shape == (512, 512, 3)
    found = detect_frames(frames)  # this session's watermark, through Janus and back
    assert found.present and found.payload is not None
    assert found.payload.session_hex == before["provenance"]["watermark"]
    assert got["audio_frames"] > 0
    assert after["sfu"]["state"] == "lost"
    assert after["viewers"] == 0


def test_deleting_the_session_destroys_its_room(face_models: Path, tmp_path: Path,
                                                janus: LocalJanus) -> None:
    async def scenario(live: LiveServer) -> tuple[dict[str, Any], str]:
        async with ApiClient(live.url) as client:
            stats = await _broadcast(client)
            session = live.manager.get(stats["id"])
            publication = session.sfu
            assert publication is not None
            await client.delete_session(stats["id"])
            await eventually(publication.released.is_set, MEDIA_TIMEOUT_S, "the publisher")
        try:
            await JanusViewer.open(stats["sfu"])
        except JanusError as exc:
            return stats, str(exc)
        return stats, ""

    with _server(tmp_path, janus) as live:
        stats, refusal = asyncio.run(scenario(live))
    assert stats["sfu"]["state"] == "live"
    assert "No such room" in refusal


def test_unreachable_sfu_leaves_the_server_fanout(face_models: Path, tmp_path: Path) -> None:
    """A Janus that does not answer costs the session its SFU, not its life."""
    async def scenario(live: LiveServer) -> dict[str, Any]:
        async with ApiClient(live.url) as client:
            stats = await _broadcast(client)
            await client.delete_session(stats["id"])
        return stats

    url = f"http://127.0.0.1:{free_port()}/janus"  # nothing listens there
    with _server(tmp_path, None, url=url) as live:
        stats = asyncio.run(scenario(live))
    assert stats["sfu"] is None


BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Debian chromium is not installed (make test installs it)")
def test_watch_page_subscribes_through_janus(face_models: Path, tmp_path: Path,
                                             janus: LocalJanus) -> None:
    """client_web/watch.js reads the session's ``sfu`` and subscribes with Janus's HTTP API:
    the browser plays the avatar and the server holds no viewer of its own."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with _server(tmp_path, janus) as live, sync_api.sync_playwright() as p:
        sid = httpx.post(f"{live.url}/v1/sessions", json={"mode": "broadcast"}).json()["id"]
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                    args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{live.url}/watch.html?session={sid}")
            page.wait_for_function("window.vivifyStats && window.vivifyStats.framesDecoded > 0",
                                   timeout=MEDIA_TIMEOUT_S * 1000)
            route, stats = page.evaluate("window.vivifyRoute"), page.evaluate("window.vivifyStats")
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)  # to look at, beside test_browser's
            page.screenshot(path=str(SCREENSHOTS / "viewer-page-janus.png"))
        finally:
            browser.close()
        viewers = httpx.get(f"{live.url}/v1/sessions/{sid}").json()["viewers"]
    assert route == "sfu"
    assert stats["width"] == 512 and stats["codec"].lower() == "video/vp8"
    assert viewers == 0  # the browser's viewer cost Janus, not the avatar server
