"""A broadcast session published once into Janus: viewers then cost the SFU, not this process.

The publisher is one more viewer of the session as far as the server is concerned: it takes
the tracks a server viewer gets (the shared fan-out encoder's packets and the session's audio,
:meth:`Session.viewer_tracks`), so publishing costs one packetisation and no extra encode. Its
peer connection goes to Janus, which forwards the packets to every subscriber.

Keyframes: Janus relays its subscribers' picture-loss requests to the publisher (one PLI when
a subscriber joins); they reach the shared encoder (:func:`on_keyframe_request`), so a new
viewer through Janus waits one frame for its keyframe instead of up to the fan-out's periodic
interval. Janus's own periodic FIR is off (``fir_freq = 0``): the fan-out sends a keyframe
every 2 s anyway.

Failure stays local: a Janus that refuses or is unreachable at start leaves the session
without an SFU (its viewers join the server directly, as without one); a Janus lost later
(its API stops answering, the connection fails, the room is destroyed) ends the publication,
releases its tracks and marks it ``lost`` in the session's JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamTrack

from vivify.streamer.rtc.peer import new_peer_connection, on_keyframe_request
from vivify.streamer.sfu.janus import JanusError, JanusHandle, JanusSession
from vivify.streamer.sfu.videoroom import Codec, RoomSpec, create_room, destroy_room, publish

log = logging.getLogger(__name__)

Release = Callable[[], Awaitable[None]]
ViewerTracks = tuple[MediaStreamTrack, MediaStreamTrack, Release]
State = Literal["live", "lost", "closed"]
CLOSE_STEP_TIMEOUT_S = 3.0  # each goodbye to Janus at most: a gone Janus must not hold a close


@dataclass(frozen=True)
class SfuConfig:
    """Where the server publishes (``--sfu-url``) and where viewers subscribe."""

    url: str  # Janus's HTTP API as the server reaches it, e.g. http://127.0.0.1:8088/janus
    public_url: str | None = None  # as viewers' browsers reach it, when not ``url``
    admin_key: str | None = None  # VideoRoom ``admin_key``, if Janus requires one
    ice_servers: tuple[str, ...] = ()
    publish_timeout_s: float = 10.0
    lost_after_s: float = 3.0  # Janus's API unreachable this long: the publication is lost

    @property
    def viewer_url(self) -> str:
        return self.public_url or self.url


class Broadcast(Protocol):
    """What the publisher needs of a session (``vivify.streamer.server`` sessions have it)."""

    id: str

    @property
    def closed(self) -> bool: ...

    def viewer_tracks(self) -> ViewerTracks: ...


class SfuSettings(Protocol):
    """The server configuration's SFU fields (``ServerConfig``: ``--sfu-url``...)."""

    @property
    def sfu_url(self) -> str | None: ...
    @property
    def sfu_public_url(self) -> str | None: ...
    @property
    def sfu_admin_key(self) -> str | None: ...
    @property
    def ice_servers(self) -> tuple[str, ...]: ...


def sfu_config(settings: SfuSettings) -> SfuConfig | None:
    """The server's SFU, or None when ``--sfu-url`` is not set (viewers join the server)."""
    if not settings.sfu_url:
        return None
    return SfuConfig(url=settings.sfu_url, public_url=settings.sfu_public_url,
                     admin_key=settings.sfu_admin_key, ice_servers=settings.ice_servers)


class SfuPublication:
    """One session's feed in one Janus room; :meth:`info` is what a viewer needs to join."""

    def __init__(self, config: SfuConfig, janus: JanusSession, handle: JanusHandle,
                 pc: RTCPeerConnection, spec: RoomSpec, room: int, feed: int,
                 release: Release) -> None:
        self.config = config
        self.janus = janus
        self.handle = handle
        self.pc = pc
        self.spec = spec
        self.room = room
        self.feed = feed
        self.state: State = "live"
        self.reason: str | None = None
        self.released = asyncio.Event()  # tracks, peer and Janus session all let go of
        self._release = release
        self._closing = False
        self._closer: asyncio.Task[None] | None = None
        self._watch = asyncio.create_task(self._watch_janus(), name=f"sfu-watch-{room}")

    def info(self) -> dict[str, Any]:
        """For the session's JSON and the watch page: ``{"url", "room", "feed", "state"}``."""
        out: dict[str, Any] = {"kind": "janus", "url": self.config.viewer_url,
                               "room": self.room, "feed": self.feed, "state": self.state}
        if self.reason is not None:
            out["reason"] = self.reason
        return out

    async def _watch_janus(self) -> None:
        """Until the end: Janus's API gone, the peer failed, or the room/feed ended there."""
        pc_down = asyncio.Event()

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                pc_down.set()

        async def handle_gone() -> str:
            while True:
                event = await self.handle.events.get()
                kind = event.get("janus")
                data = event.get("plugindata", {}).get("data", {})
                if kind in ("hangup", "detached", "lost"):
                    return f"Janus {kind}: {event.get('reason', '')}".strip(": ")
                if data.get("videoroom") == "destroyed":
                    return "the Janus room was destroyed"

        waits = {asyncio.create_task(self.janus.lost.wait()): "Janus unreachable",
                 asyncio.create_task(pc_down.wait()): "connection to Janus failed",
                 asyncio.create_task(handle_gone()): ""}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        first = done.pop()
        reason = waits[first] or str(first.result())
        if not self._closing:
            log.warning("sfu publication in room %s lost: %s", self.room, reason)
            self._spawn_close("lost", reason)

    def _spawn_close(self, state: State, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(self._close(state, reason))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        self._closer = task  # keep a reference until done

    async def aclose(self, reason: str = "session closed") -> None:
        """Leave Janus (room destroyed), close the peer, release the tracks. Idempotent."""
        await self._close("closed", reason)
        await self.released.wait()

    async def _close(self, state: State, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self.state, self.reason = state, reason
        if asyncio.current_task() is not self._watch:
            self._watch.cancel()
        with contextlib.suppress(Exception):
            await self.pc.close()
        try:
            await self._release()
        finally:
            await _leave_janus(self.janus, self.handle, self.room, self.spec)
            self.released.set()


async def _leave_janus(janus: JanusSession, handle: JanusHandle | None, room: int | None,
                       spec: RoomSpec) -> None:
    """Destroy the room and the API session, each bounded; a gone Janus is skipped quietly."""
    if handle is not None and room is not None and not janus.lost.is_set():
        with contextlib.suppress(JanusError, TimeoutError):
            async with asyncio.timeout(CLOSE_STEP_TIMEOUT_S):
                await destroy_room(handle, room, spec.secret)
    with contextlib.suppress(JanusError, TimeoutError):
        async with asyncio.timeout(CLOSE_STEP_TIMEOUT_S):
            await janus.aclose()


def _prefer(pc: RTCPeerConnection, codec: Codec) -> None:
    """Offer only the session's codec (and RTX): the fan-out's packets are in that codec."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    keep = [c for c in caps if c.mimeType.lower() in (f"video/{codec}", "video/rtx")]
    for t in pc.getTransceivers():
        if t.kind == "video":
            t.setCodecPreferences(keep)


async def publish_broadcast(config: SfuConfig, session: Broadcast, codec: Codec,
                            ) -> SfuPublication:
    """Create a room for ``session`` at Janus and publish its viewer tracks there, bounded by
    ``config.publish_timeout_s``; :class:`JanusError` (everything undone) when that fails."""
    janus = await JanusSession.create(config.url, lost_after_s=config.lost_after_s)
    handle: JanusHandle | None = None
    room: int | None = None
    spec = RoomSpec(codec=codec, fir_freq=0, description=f"vivify {session.id[:12]}")
    pc = new_peer_connection(config.ice_servers)
    release: Release | None = None
    try:
        async with asyncio.timeout(config.publish_timeout_s):
            handle = await janus.attach()
            room = await create_room(handle, spec, config.admin_key)
            video, audio, release = session.viewer_tracks()
            sender = pc.addTrack(video)
            pc.addTrack(audio)
            for t in pc.getTransceivers():
                t.direction = "sendonly"
            _prefer(pc, codec)
            request = getattr(video, "request_keyframe", None)
            if callable(request):
                on_keyframe_request(sender, request)
            feed = await publish(handle, room, pc, display=session.id[:12],
                                 timeout_s=config.publish_timeout_s)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await pc.close()
        if release is not None:
            await release()
        await _leave_janus(janus, handle, room, spec)
        if isinstance(exc, TimeoutError):
            raise JanusError(f"publishing took over {config.publish_timeout_s:g} s") from None
        raise
    log.info("session %s published into Janus room %s as feed %s", session.id, room, feed)
    return SfuPublication(config, janus, handle, pc, spec, room, feed, release)


async def try_publish(config: SfuConfig, session: Broadcast, codec: Codec,
                      ) -> SfuPublication | None:
    """:func:`publish_broadcast`, or None (logged) when Janus refuses or cannot be reached:
    the session then has the server's own fan-out only, as without an SFU."""
    try:
        publication = await publish_broadcast(config, session, codec)
    except JanusError as exc:
        log.warning("session %s is not published into the SFU at %s (%s): its viewers join "
                    "this server", session.id, config.url, exc)
        return None
    if session.closed:  # it ended while Janus answered
        await publication.aclose("session closed while publishing")
        return None
    return publication
