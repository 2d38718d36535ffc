"""A session: one avatar's per-peer state in one object, with one cleanup path.

A ``Session`` owns its media pipeline, its peer connection (mirror mode, or the optional main
peer of a broadcast), its viewers and its WebSocket clients. Every way a session can end — an
API ``DELETE``, the peer's connection failing, the peer's audio stopping, an idle timeout, server
shutdown — goes through :meth:`Session.aclose`, which is safe to call twice.

It is handed what it needs when it is made: the clock, the peer settings, and two callbacks
its owner (the :class:`~vivify.streamer.server.manager.SessionManager`) is told through, when
the session starts closing and when it has closed. Negotiation, tracks and the viewers'
shared encoder are :mod:`vivify.streamer.rtc`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import av
import numpy as np
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from vivify.engines.audio.audio_io import SAMPLE_RATE
from vivify.streamer.media.clock import Clock
from vivify.streamer.media.session_media import SessionMedia
from vivify.streamer.rtc.fanout import EncodedVideoTrack, VideoFanout
from vivify.streamer.rtc.negotiation import NegotiationError, answer_offer
from vivify.streamer.rtc.peer import new_peer_connection, shorten_audio_jitter_buffer
from vivify.streamer.rtc.tracks import AvatarAudioTrack, AvatarVideoTrack
from vivify.streamer.server.errors import ApiError, Full
from vivify.streamer.sfu.publisher import SfuPublication

log = logging.getLogger(__name__)

Mode = Literal["mirror", "broadcast"]
PEER_SILENT_TIMEOUT = 4.0  # s without audio from a mirror peer: it has vanished
RETRY_AFTER_S = 10


@dataclass(frozen=True)
class VideoOptions:
    fps: int = 25
    size: int = 512
    codec: Literal["vp8", "h264"] = "vp8"


@dataclass(frozen=True)
class PeerSettings:
    """What a session's peer connections are made with (from the server's configuration)."""

    ice_servers: tuple[str, ...] = ()
    audio_prefetch_frames: int = 0  # Opus packets held for reordering (aiortc: 4; 0 = none)
    max_viewers: int = 16


SessionCallback = Callable[["Session"], None]


def _no_callback(_session: Session) -> None:
    pass


async def _answer(pc: RTCPeerConnection, offer: dict[str, str], video: MediaStreamTrack,
                  audio: MediaStreamTrack, codec: str, require_codec: bool = False,
                  need_audio: bool = False) -> dict[str, str]:
    """:func:`~vivify.streamer.rtc.negotiation.answer_offer`, a refusal as a 400 with its code."""
    try:
        return await answer_offer(pc, offer, video, audio, codec, require_codec=require_codec,
                                  need_audio=need_audio)
    except NegotiationError as exc:
        raise ApiError(str(exc), code=exc.code) from exc


class Session:
    """One avatar session. ``on_closing`` is called first thing in :meth:`aclose` (before any
    await: the owner stops listing it), ``on_closed`` once everything is released."""

    def __init__(self, avatar: str, mode: Mode, video: VideoOptions, media: SessionMedia,
                 clock: Clock, peers: PeerSettings | None = None, session_id: str | None = None,
                 on_closing: SessionCallback = _no_callback,
                 on_closed: SessionCallback = _no_callback) -> None:
        self.id = session_id or uuid.uuid4().hex
        self.clock = clock
        self.peers = peers or PeerSettings()
        self._on_closing = on_closing
        self._on_closed = on_closed
        self.avatar = avatar
        self.mode = mode
        self.video = video
        self.media = media
        self.created = time.time()
        self.pc: RTCPeerConnection | None = None
        self.viewers: dict[str, RTCPeerConnection] = {}
        self.sockets: set[Callable[[dict[str, Any]], None]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.close_reason: str | None = None
        self._last_peer_audio = clock.now()
        self._last_activity = clock.now()
        self._live_slots_seen = 0
        self.consumers = 0  # in-process consumers of its pairs (streamer/integrations)
        self.fanout: VideoFanout | None = None  # one encode for all viewers
                                                # (streamer/rtc/fanout.py)
        self.sfu: SfuPublication | None = None  # a broadcast's feed in Janus (streamer/sfu)
        media.listen(on_event=self.emit, on_failure=self.fail)

    # ------------------------------------------------------------------ events
    def emit(self, event: dict[str, Any]) -> None:
        for send in list(self.sockets):
            send(event)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=f"{name}-{self.id[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ peers
    async def connect(self, offer: dict[str, str]) -> dict[str, str]:
        """The main peer: in mirror mode its microphone drives the avatar."""
        pc = new_peer_connection(self.peers.ice_servers)
        self.pc = pc
        sub = self.media.subscribe()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and self.mode == "mirror":
                shorten_audio_jitter_buffer(pc, track, self.peers.audio_prefetch_frames)
                self._spawn(self._ingest(track), "ingest")

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.aclose(f"peer connection {pc.connectionState}")

        try:
            answer = await _answer(pc, offer, AvatarVideoTrack(sub), AvatarAudioTrack(sub),
                                   self.video.codec, need_audio=self.mode == "mirror")
        except BaseException:
            self.media.unsubscribe(sub)
            raise
        if self.mode == "mirror":
            self._spawn(self._watch_peer_audio(), "watchdog")
        return answer

    async def add_viewer(self, offer: dict[str, str]) -> tuple[str, dict[str, str]]:
        if len(self.viewers) >= self.peers.max_viewers:
            raise Full("this session has all the viewers it can take",
                       headers={"Retry-After": str(RETRY_AFTER_S)})
        viewer_id = uuid.uuid4().hex[:12]
        pc = new_peer_connection(self.peers.ice_servers)
        video, audio, release = self.viewer_tracks()
        self.viewers[viewer_id] = pc

        async def drop() -> None:
            if self.viewers.pop(viewer_id, None) is not None:
                await release()
                with contextlib.suppress(Exception):
                    await pc.close()

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await drop()

        try:
            answer = await _answer(pc, offer, video, audio, self.video.codec,
                                   require_codec=True)
        except BaseException:
            await drop()
            raise
        return viewer_id, answer

    def viewer_tracks(self) -> tuple[EncodedVideoTrack, AvatarAudioTrack,
                                     Callable[[], Awaitable[None]]]:
        """A viewer's tracks (the shared encoder's video, the session's audio) and the call
        that gives them back; the encoder stops with its last viewer. Server viewers and the
        SFU publisher (streamer/sfu/publisher.py) both take these."""
        sub = self.media.subscribe(video=False)  # video comes encoded, from the fanout
        fanout = self._fanout()
        video = fanout.attach(sub)

        async def release() -> None:
            self.media.unsubscribe(sub)
            video.stop()
            if not fanout.tracks and self.fanout is fanout:
                self.fanout = None
                await fanout.aclose()

        return video, AvatarAudioTrack(sub), release

    def _fanout(self) -> VideoFanout:
        """The session's shared viewer encoder, started with the first viewer."""
        if self.fanout is None:
            self.fanout = VideoFanout(self.media, self.video.codec)
        return self.fanout

    async def _ingest(self, track: MediaStreamTrack) -> None:
        """Peer microphone (Opus, 48 kHz) → 16 kHz mono float32 → the media pipeline."""
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            while True:
                frame = await track.recv()
                self._last_peer_audio = self._last_activity = self.clock.now()
                for out in resampler.resample(frame):  # type: ignore[arg-type]
                    self.media.push_audio(np.asarray(out.to_ndarray(), np.float32).reshape(-1))
        except MediaStreamError:
            await self.aclose("peer audio ended")

    async def _watch_peer_audio(self) -> None:
        """A mirror peer that stops sending audio (closed tab, lost network) is gone."""
        while not self._closed:
            await self.clock.sleep(1.0)
            if self.clock.now() - self._last_peer_audio > PEER_SILENT_TIMEOUT:
                await self.aclose("no audio from the peer")
                return

    def touch(self) -> None:
        """Someone used the session (a WebSocket message, a viewer, speech): not idle."""
        self._last_activity = self.clock.now()

    def _attended(self) -> bool:
        """Someone is there right now: a viewer, a connected main peer, an in-process
        consumer (a framework plugin), or pushed audio still playing. A WebSocket that only
        listens does not count: a broadcast with no presenter audio and no viewers is idle,
        whoever holds its socket."""
        if self.viewers or self.consumers or (self.pc is not None
                                              and self.pc.connectionState == "connected"):
            return True
        played, self._live_slots_seen = self._live_slots_seen, self.media.stats.live_slots
        return self.media.stats.live_slots != played

    def watch_idle(self, limit_s: float) -> None:
        """End the session, through :meth:`aclose`, after ``limit_s`` seconds unattended and
        untouched (``vivify serve --idle-timeout``)."""
        self._spawn(self._watch_idle(limit_s), "idle")

    async def _watch_idle(self, limit_s: float) -> None:
        clock = self.clock
        while not self._closed:
            await clock.sleep(min(1.0, limit_s / 4))
            if self._attended():
                self.touch()
            elif clock.now() - self._last_activity >= limit_s:
                await self.aclose(f"idle for {limit_s:g} s (no audio, viewer, peer or message)")
                return

    # ------------------------------------------------------------------ state
    def stats(self) -> dict[str, Any]:
        return {
            "id": self.id, "avatar": self.avatar, "mode": self.mode,
            "video": {"fps": self.video.fps, "size": self.video.size, "codec": self.video.codec},
            "created": self.created, "viewers": len(self.viewers),
            "connection": self.pc.connectionState if self.pc else None,
            "websockets": len(self.sockets), "media": self.media.stats.as_dict(),
            "viewer_encoder": self.fanout.stats() if self.fanout else None,
            "sfu": self.sfu.info() if self.sfu else None,
            "provenance": self.provenance(),
        }

    def provenance(self) -> dict[str, Any]:
        """What marks this session's frames: the watermark's session hash and any label."""
        stamp = self.media.stamp
        if stamp is None:
            return {"watermark": None, "label": None}
        return {"watermark": stamp.info.session_hash, "label": stamp.info.label}

    @property
    def closed(self) -> bool:
        return self._closed

    def fail(self, exc: BaseException) -> None:
        """The media pipeline died of an error: close the session (through the one path)."""
        task = asyncio.get_running_loop().create_task(
            self.aclose(f"media pipeline failed: {type(exc).__name__}: {exc}"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self, reason: str = "closed") -> None:
        """The one cleanup path. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.close_reason = reason
        log.info("session %s closing: %s", self.id, reason)
        self._on_closing(self)
        self.emit({"type": "error", "code": "session_closed", "message": reason})
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        if self.sfu is not None:
            await self.sfu.aclose(reason)
        if self.fanout is not None:
            await self.fanout.aclose()
            self.fanout = None
        await self.media.aclose()  # gives back its place in shared engines too
        pcs = [p for p in [self.pc, *self.viewers.values()] if p is not None]
        self.viewers.clear()
        for pc in pcs:
            with contextlib.suppress(Exception):
                await pc.close()
        self.sockets.clear()
        self._on_closed(self)
