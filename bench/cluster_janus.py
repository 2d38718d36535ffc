"""Viewers of one broadcast through Janus vs through the server's own fan-out (issue 18).

``python -m bench.cluster_janus [--quick]`` prints one JSON; ``bench/cluster.py`` (``make
bench-cluster``) calls :func:`measure` and files it under ``janus``.

Method. One real ``vivify serve`` child process (``--sfu-url`` pointing at a loopback-only
Janus that :class:`~vivify.streamer.sfu.launcher.LocalJanus` starts with VideoRoom and the HTTP
transport only) runs one broadcast session; it publishes into a Janus room once.

``viewer_frames``
    One aiortc viewer subscribes through Janus and decodes for ``VIEWER_S`` seconds: the
    frames it decoded, their rate, and whether they are the avatar (not blank).
``viewers_held_janus`` / ``viewers_held_direct``
    Levels of N concurrent viewers (1, 2, 4, 8, ...), first through Janus, then joining the
    server directly (``POST /v1/sessions/{id}/viewers``, the shared encoder's fan-out). A
    level holds when every viewer received ≥ 24 frames/s over ``LEVEL_S`` seconds after
    ``SETTLE_S`` s of settling; the ramp stops at the first level that fails twice. These
    viewers do not decode: a viewer's decode runs on its own device, not on the server, so
    each counts the complete frames its jitter buffer assembled (a stub decoder stands in for
    VP8's; audio likewise). Each level records the cores the server, Janus, this client
    process and everything else used (the client's own RTP work shares this machine too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiortc.rtcrtpreceiver as rtcrtpreceiver
import numpy as np
from aiortc import RTCPeerConnection

from bench.harness.procfs import CpuMeter
from bench.harness.results import frame_rate
from bench.harness.server import LiveServer
from vivify.streamer.client import ApiClient, offer_peer
from vivify.streamer.sfu.launcher import LocalJanus, janus_binary
from vivify.streamer.sfu.viewer import JanusViewer

MIN_FPS = 24.0
VIEWER_S = 5.0
SETTLE_S = 2.0
LEVEL_S = 4.0
LEVELS = (1, 2, 4, 8, 16, 24, 32, 48, 64)
QUICK_LEVELS = (1, 4, 16)


class _CountedFrame:
    """What a counting viewer's track hands out instead of a decoded picture."""

    def __init__(self, timestamp: int) -> None:
        self.pts = timestamp


class _CountingDecoder:
    """Stands in for aiortc's decoder: one "frame" per assembled encoded frame, no decode."""

    def decode(self, encoded_frame: Any) -> list[_CountedFrame]:
        return [_CountedFrame(encoded_frame.timestamp)]


@contextlib.contextmanager
def counting_decoders() -> Iterator[None]:
    """Receivers started inside count frames instead of decoding them (this process only)."""
    real = rtcrtpreceiver.get_decoder
    def counting(codec: Any) -> Any:
        return _CountingDecoder()

    rtcrtpreceiver.get_decoder = counting
    try:
        yield
    finally:
        rtcrtpreceiver.get_decoder = real


class Watcher:
    """One viewer's peer and the arrival times of its video frames."""

    def __init__(self, pc: RTCPeerConnection, close: Callable[[], Awaitable[None]]) -> None:
        self.pc = pc
        self.times: list[float] = []
        self.images: list[np.ndarray] = []
        self.keep_images = 0
        self._close = close
        self._tasks = [asyncio.create_task(self._pull(r.track)) for r in pc.getReceivers()
                       if r.track is not None]

    async def _pull(self, track: Any) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                if track.kind != "video":
                    continue
                self.times.append(time.monotonic())
                if len(self.images) < self.keep_images:
                    self.images.append(frame.to_ndarray(format="rgb24"))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._close()


async def _janus_viewer(sfu: dict[str, Any]) -> Watcher:
    viewer = await JanusViewer.open(sfu)
    return Watcher(viewer.pc, viewer.aclose)


async def _direct_viewer(api: ApiClient, session_id: str) -> Watcher:
    pc = offer_peer("viewer")
    await api.add_viewer(session_id, pc)
    return Watcher(pc, pc.close)


def _fps_between(times: list[float], t0: float, t1: float) -> float:
    n = sum(1 for t in times if t0 <= t < t1)
    return n / (t1 - t0)


async def _level(open_one: Callable[[], Awaitable[Watcher]], n: int,
                 pids: tuple[int, int, int]) -> dict[str, Any]:
    watchers: list[Watcher] = []
    try:
        t_open = time.monotonic()
        for _ in range(n):
            watchers.append(await open_one())
        open_s = time.monotonic() - t_open
        await asyncio.sleep(SETTLE_S)
        client, server, janus = pids
        meter, janus_meter = CpuMeter(lambda: [client, server]), CpuMeter(lambda: [janus])
        t0 = time.monotonic()
        await asyncio.sleep(LEVEL_S)
        t1 = time.monotonic()
        fps = [_fps_between(w.times, t0, t1) for w in watchers]
        cpu = meter.read()
        cpu["cores_janus"] = janus_meter.read()["cores_client"]  # its one pid comes first
        if cpu["cores_others"] is not None and cpu["cores_janus"] is not None:
            cpu["cores_others"] = round(max(0.0, cpu["cores_others"] - cpu["cores_janus"]), 2)
    finally:
        await asyncio.gather(*(w.aclose() for w in watchers), return_exceptions=True)
    return {"viewers": n, "held": bool(fps) and min(fps) >= MIN_FPS,
            "fps_min": round(min(fps), 2), "fps_median": round(float(np.median(fps)), 2),
            "open_s": round(open_s, 2), "cpu": cpu}


async def _ramp(name: str, open_one: Callable[[], Awaitable[Watcher]], levels: tuple[int, ...],
                pids: tuple[int, int, int], log: Callable[[str], None]) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    held = 0
    for n in levels:
        for attempt in (1, 2):
            try:
                level = await _level(open_one, n, pids)
            except Exception as exc:  # a refusal (503, Janus error) ends the ramp
                level = {"viewers": n, "held": False, "error": f"{type(exc).__name__}: {exc}"}
            level["attempt"] = attempt
            results.append(level)
            log(f"{name}: {n} viewers → {level.get('fps_min')} fps min, "
                f"held={level['held']}")
            if level["held"]:
                break
        if not results[-1]["held"]:
            break
        held = n
    return {"held": held, "levels": results}


async def _scenario(server: LiveServer, janus: LocalJanus, levels: tuple[int, ...],
                    log: Callable[[str], None]) -> dict[str, Any]:
    assert janus.process is not None and server.proc is not None
    janus_pid, server_pid = janus.process.pid, server.proc.pid
    async with ApiClient(server.url) as api:
        created = await api.create_session(None, {"mode": "broadcast"})
        stats = await api.session_stats(created["id"])
        sfu = stats["sfu"]
        if not sfu or sfu.get("state") != "live":
            raise RuntimeError(f"the session was not published into Janus: {sfu}")
        one = await _janus_viewer(sfu)
        one.keep_images = 10
        await asyncio.sleep(VIEWER_S)
        await one.aclose()
        images = one.images
        rate = frame_rate(one.times)
        out: dict[str, Any] = {
            "viewer_frames": len(one.times), "viewer_seconds": VIEWER_S,
            "viewer_fps": rate.get("fps"),
            "viewer_frames_not_blank": bool(images) and all(
                float(i.std()) > 20 for i in images),
        }
        log(f"one viewer through Janus: {len(one.times)} frames in {VIEWER_S:g} s")

        pids = (os.getpid(), server_pid, janus_pid)
        with counting_decoders():
            via = await _ramp("janus", lambda: _janus_viewer(sfu), levels, pids, log)
            direct = await _ramp("direct", lambda: _direct_viewer(api, created["id"]), levels,
                                 pids, log)
        await api.delete_session(created["id"])
    out.update(viewers_held_janus=via["held"], viewers_held_direct=direct["held"],
               janus_levels=via["levels"], direct_levels=direct["levels"],
               min_fps=MIN_FPS, level_s=LEVEL_S, levels_tried=list(levels))
    return out


def measure(quick: bool = False, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Everything above, as one dict (``bench/cluster.py`` files it under ``janus``).

    ``{"skipped": reason}`` when the janus binary is missing.
    """
    say = log or (lambda m: print(f"[janus] {m}", flush=True))
    if janus_binary() is None:
        return {"skipped": "the janus binary is missing (apt-get install janus)"}
    levels = QUICK_LEVELS if quick else LEVELS
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vivify-bench-janus-") as tmp, LocalJanus() as janus:
        args = ["--sfu-url", janus.url, "--sfu-admin-key", janus.admin_key,
                "--max-viewers", str(max(levels) + 1), "--idle-timeout", "0"]
        with LiveServer(Path(tmp) / "home", args=args) as server:
            out = asyncio.run(_scenario(server, janus, levels, say))
    out["janus_version"] = _janus_version()
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


def _janus_version() -> str | None:
    binary = janus_binary()
    if binary is None:
        return None
    text = subprocess.run([binary, "--version"], capture_output=True, text=True,
                          timeout=10).stdout
    return next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("Janus version")), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="levels 1, 4, 16 only")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    result = measure(quick=args.quick)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
