"""The avatar side of LiveKit Agents' avatar protocol, on Vivify's engines.

A LiveKit agent with an avatar plugin does not publish its own audio: it streams its TTS to an
avatar participant, which publishes the face and the voice on the agent's behalf. The wire
protocol (livekit-agents ``voice/avatar``) is small, and maps one to one onto an
:class:`~vivify.streamer.integrations.avatar_session.AvatarSession`:

=============================================  ===========================================
agent → avatar                                 here
=============================================  ===========================================
byte stream on topic ``lk.audio_stream``       ``push_audio`` (16 kHz), per segment
(attributes ``sample_rate``, ``num_channels``)
the stream's end                               ``segment_end``
RPC ``lk.clear_buffer``                        ``interrupt``
=============================================  ===========================================

and back, from the session's events: RPC ``lk.playback_started`` and ``lk.playback_finished``
(``{"playback_position": seconds, "interrupted": bool}``). The byte streams and RPCs are read
and sent by livekit-agents' own :class:`DataStreamAudioReceiver`, so the protocol details
(lost trailers, retries, the caller check) are LiveKit's, not a re-implementation.

Why a worker-side segment queue: a session plays one segment at a time, and appends audio
pushed before ``playback_finished`` to the segment still playing. An agent may stream its next
utterance while the last one plays; it expects one ``playback_finished`` per stream, in order.
So a segment is held here until the one before it has finished; the position reported is the
seconds of audio the agent sent.

Video and audio go out together: each played :class:`~vivify.streamer.media.pairs.AVPair`
(one frame and
its 40 ms of audio, paced in real time by the session) is pushed as a video frame and an audio
frame through ``rtc.AVSynchronizer``, so the lips stay on the voice.

Run one with ``vivify livekit-worker`` (this process's engines), or inside ``vivify serve``
(``POST /v1/livekit/sessions``, :func:`add_livekit_routes`), where every room's session is
batched with every other session of that server. The module imports without livekit
installed; livekit is imported where a worker starts, and the route answers 501 without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel, Field

from vivify.engines.audio.audio_io import SAMPLE_RATE
from vivify.streamer.integrations.avatar_session import (
    AvatarSession,
    LocalAvatars,
    Resampler,
    to_mono_float,
)
from vivify.streamer.server.errors import ApiError, Conflict

if TYPE_CHECKING:
    from livekit import rtc

    from vivify.streamer.server.manager import SessionManager

log = logging.getLogger(__name__)

AUDIO_QUEUE_MS = 100  # the published audio source's buffer (what AvatarRunner uses)
CONNECT_TIMEOUT_S = 15.0
AGENT_JOIN_TIMEOUT_S = 60.0  # an avatar whose agent never shows up is ended, not kept forever
OVERFLOW_RETRY_S = 0.1  # a full session buffer is retried this often (backpressure)
INSTALL_HINT = "pip install '.[livekit]'"
ATTRIBUTE_PUBLISH_ON_BEHALF = "lk.publish_on_behalf"  # = livekit.agents.types' constant


class LiveKitUnavailable(ImportError):
    """livekit / livekit-agents are not installed: the message says how to install them."""


def require_livekit() -> None:
    """Raise :class:`LiveKitUnavailable` unless the LiveKit extra is importable."""
    try:
        import livekit.agents.voice.avatar
        import livekit.api
        import livekit.rtc  # noqa: F401
    except ImportError as exc:
        raise LiveKitUnavailable(
            f"the LiveKit integration needs livekit, livekit-agents and livekit-api: "
            f"{INSTALL_HINT} ({exc})") from exc


def token_identities(token: str) -> tuple[str, str | None]:
    """The avatar's identity in ``token`` and the agent it publishes for
    (``lk.publish_on_behalf``), read without verifying: the LiveKit server verifies it; here
    it only tells the receiver whose audio to accept."""
    from livekit import api

    try:
        claims = api.TokenVerifier().verify(token, verify_signature=False)
    except Exception as exc:  # any malformed JWT: pyjwt's DecodeError and friends
        raise ValueError(f"not a LiveKit access token: {exc}") from exc
    return claims.identity, (claims.attributes or {}).get(ATTRIBUTE_PUBLISH_ON_BEHALF) or None


@dataclass
class _Segment:
    """One ``lk.audio_stream`` of the agent: its audio, not yet all in the session."""

    resample: Resampler
    pending: deque[np.ndarray] = field(default_factory=deque)  # 16 kHz chunks to push
    received_s: float = 0.0  # seconds of audio the agent sent: the exact position to report
    ended: bool = False  # the stream's end arrived
    end_sent: bool = False  # segment_end() told to the session
    in_session: bool = False  # some of its audio is in the session: it is the one playing
    started_sent: bool = False
    cleared: bool = False  # interrupted: awaiting the session's playback_finished
    cancelled_after: int = 0  # later segments dropped by that interrupt, reported after it


@dataclass
class WorkerStats:
    frames_published: int = 0
    live_frames_published: int = 0
    segments_received: int = 0
    segments_finished: int = 0
    interrupts: int = 0
    interrupt_to_idle_ms: list[float] = field(default_factory=list)  # clear → first idle frame


class LiveKitAvatarWorker:
    """One avatar in one LiveKit room: ``room`` is connected as the avatar participant,
    ``session`` is its avatar session. :meth:`start` runs it until the session ends, the room
    disconnects or the agent leaves; it then closes the session and leaves the room."""

    def __init__(self, room: rtc.Room, session: AvatarSession, *,
                 sender_identity: str | None = None) -> None:
        self.room = room
        self.session = session
        self.sender_identity = sender_identity  # None: the first agent participant
        self.stats = WorkerStats()
        self.closed = asyncio.Event()
        self._segments: deque[_Segment] = deque()
        self._receiver: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._overflow = False
        self._clear_at: float | None = None
        self.close_reason = ""

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            # Listen before anything awaits: an agent that leaves at once must still end it.
            self.room.on("participant_disconnected", self._on_participant_left)
            self.room.on("disconnected", self._on_disconnected)
            self._task = asyncio.create_task(self._run(), name=f"livekit-avatar-{self.session.id}")
        return self._task

    async def aclose(self, reason: str = "closed") -> None:
        """Stop and clean up (idempotent); returns once the room is left."""
        if not self.close_reason:
            self.close_reason = reason
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(self._task)
        else:
            await self._cleanup(None, None)

    async def _run(self) -> None:
        from livekit import rtc
        from livekit.agents.voice.avatar import DataStreamAudioReceiver

        size = self.session.size
        audio_source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=AUDIO_QUEUE_MS)
        video_source = rtc.VideoSource(size, size)
        av_sync = rtc.AVSynchronizer(audio_source=audio_source, video_source=video_source,
                                     video_fps=self.session.fps,
                                     video_queue_size_ms=AUDIO_QUEUE_MS)
        tasks: list[asyncio.Task[Any]] = []
        try:
            # Publish first: the agent's DataStreamAudioOutput waits for our video track
            # before it streams any audio, and the idle face is on screen meanwhile.
            local = self.room.local_participant
            await local.publish_track(
                rtc.LocalAudioTrack.create_audio_track("vivify_audio", audio_source),
                rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
            await local.publish_track(
                rtc.LocalVideoTrack.create_video_track("vivify_video", video_source),
                rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))
            tasks.append(asyncio.create_task(self._publish(av_sync), name="publish"))
            tasks.append(asyncio.create_task(self._forward_events(), name="events"))
            receiver = DataStreamAudioReceiver(self.room, sender_identity=self.sender_identity)
            self._receiver = receiver
            if await self._until_stopped(tasks, receiver.start()):  # the agent is here
                receiver.on("clear_buffer", self._on_clear_buffer)
                if self.sender_identity is None:  # the receiver picked the first agent
                    agent = getattr(receiver, "_remote_participant", None)
                    self.sender_identity = getattr(agent, "identity", None)
                tasks.append(asyncio.create_task(self._read_audio(receiver), name="audio"))
                await self._until_stopped(tasks)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("livekit avatar %s: %s failed: %r", self.session.id,
                              task.get_name(), task.exception())
        finally:
            await self._cleanup(tasks, (av_sync, audio_source, video_source))

    async def _until_stopped(self, tasks: list[asyncio.Task[Any]],
                             step: Coroutine[Any, Any, Any] | None = None) -> bool:
        """Wait for ``step`` (True once it is done), or until the worker is stopped or one of
        ``tasks`` ends (False). A ``step`` still waiting for the agent after
        ``AGENT_JOIN_TIMEOUT_S`` ends the worker."""
        waiting = asyncio.create_task(asyncio.wait_for(step, AGENT_JOIN_TIMEOUT_S)
                                      if step is not None else self._stop.wait())
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({waiting, stop, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not waiting.done():
                waiting.cancel()
        if step is None or not waiting.done() or waiting.cancelled():
            return False
        if isinstance(waiting.exception(), TimeoutError):
            self.close_reason = self.close_reason or (
                f"the agent {self.sender_identity or ''} did not join within "
                f"{AGENT_JOIN_TIMEOUT_S:.0f} s")
            return False
        return waiting.exception() is None

    async def _cleanup(self, tasks: list[asyncio.Task[Any]] | None,
                       media: tuple[Any, Any, Any] | None) -> None:
        if self.closed.is_set():
            return
        for task in tasks or ():
            task.cancel()
        for task in tasks or ():
            with contextlib.suppress(BaseException):
                await task
        if self._receiver is not None:
            with contextlib.suppress(Exception):
                await self._receiver.aclose()
        for closable in media or ():
            with contextlib.suppress(Exception):
                await closable.aclose()
        with contextlib.suppress(Exception):
            await self.session.aclose(self.close_reason or "the LiveKit avatar left the room")
        with contextlib.suppress(Exception):
            self.room.off("participant_disconnected", self._on_participant_left)
            self.room.off("disconnected", self._on_disconnected)
        with contextlib.suppress(Exception):
            await self.room.disconnect()
        self.closed.set()

    def _on_participant_left(self, participant: Any) -> None:
        if self.sender_identity is not None and participant.identity == self.sender_identity:
            self.close_reason = self.close_reason or "the agent left the room"
            self._stop.set()

    def _on_disconnected(self, *_: Any) -> None:
        self.close_reason = self.close_reason or "disconnected from the LiveKit room"
        self._stop.set()

    # ------------------------------------------------------------------ agent → session
    async def _read_audio(self, receiver: Any) -> None:
        from livekit.agents.voice.avatar import AudioSegmentEnd

        async for item in receiver:
            if isinstance(item, AudioSegmentEnd):
                self._end_segment()
            else:
                self._add_frame(item)
            self._pump()

    def _add_frame(self, frame: rtc.AudioFrame) -> None:
        last = self._segments[-1] if self._segments else None
        if last is None or last.ended or last.cleared:
            if last is not None:
                last.ended = True
            last = _Segment(Resampler(frame.sample_rate))
            self._segments.append(last)
            self.stats.segments_received += 1
        pcm = np.frombuffer(bytes(frame.data), dtype=np.int16)
        samples = last.resample(to_mono_float(pcm, frame.num_channels))
        last.received_s += frame.samples_per_channel / frame.sample_rate
        if samples.size:
            last.pending.append(samples)

    def _end_segment(self) -> None:
        last = self._segments[-1] if self._segments else None
        if last is None or last.ended:
            return  # the end of a stream that an interrupt already dropped
        last.ended = True
        if last.cleared:
            return
        tail = last.resample.flush()
        if tail.size:  # a partial last block is the session's to complete (segment_end)
            last.pending.append(tail)

    def _pump(self) -> None:
        """Move the playing segment's audio into the session (as far as its buffer takes),
        and end it there once it has all arrived."""
        while self._segments:
            head = self._segments[0]
            if head.cleared:
                return
            while head.pending:
                try:
                    self.session.push_audio(head.pending[0], SAMPLE_RATE)
                except OverflowError:  # the session's buffer is full: retry shortly
                    if not self._overflow:
                        self._overflow = True
                        asyncio.get_running_loop().call_later(OVERFLOW_RETRY_S, self._retry)
                    return
                head.pending.popleft()
                head.in_session = True
            if not head.ended or head.end_sent:
                return
            if head.in_session:
                head.end_sent = True
                self.session.segment_end()
                return
            self._segments.popleft()  # a stream with no audio: finished, nothing played
            self._notify_finished(0.0, False, head)

    def _retry(self) -> None:
        self._overflow = False
        if not self._stop.is_set():
            self._pump()

    def _on_clear_buffer(self) -> None:
        """``lk.clear_buffer``: stop speaking now. The session reports the position reached
        (its ``playback_finished``); segments that never reached it are reported as
        interrupted at 0, after that one, so the agent hears one answer per stream, in order."""
        self.stats.interrupts += 1
        head = self._segments[0] if self._segments else None
        self.session.interrupt()
        if head is not None and head.in_session:
            self._clear_at = time.perf_counter()
            dropped = len(self._segments) - 1
            self._segments = deque([head])
            head.cleared = True
            head.pending.clear()
            head.cancelled_after += dropped
            return
        dropped_segments = list(self._segments)
        self._segments.clear()
        for segment in dropped_segments:
            self._notify_finished(0.0, True, segment)

    # ------------------------------------------------------------------ session → agent
    async def _forward_events(self) -> None:
        async for event in self.session.events():
            kind = event.get("type")
            if kind == "playback_started":
                head = self._segments[0] if self._segments else None
                if head is not None and not head.started_sent:
                    head.started_sent = True
                    if self._receiver is not None:
                        self._receiver.notify_playback_started()
            elif kind == "playback_finished":
                if not self._segments:
                    continue
                head = self._segments.popleft()
                position = min(float(event.get("position_ms", 0)) / 1000.0, head.received_s)
                interrupted = bool(event.get("interrupted"))
                self._notify_finished(position if interrupted else head.received_s,
                                      interrupted, head)
                for _ in range(head.cancelled_after):
                    self._notify_finished(0.0, True, None)
                self._pump()
        self.close_reason = self.close_reason or "the avatar session ended"
        self._stop.set()

    def _notify_finished(self, position: float, interrupted: bool,
                         segment: _Segment | None) -> None:
        self.stats.segments_finished += 1
        if self._receiver is None:
            return
        if segment is not None and not segment.started_sent and not interrupted:
            self._receiver.notify_playback_started()  # never reached the screen: still paired
        self._receiver.notify_playback_finished(playback_position=round(position, 6),
                                                interrupted=interrupted)

    async def _publish(self, av_sync: rtc.AVSynchronizer) -> None:
        """Every played pair out as one video frame and its 40 ms of audio, together."""
        from livekit import rtc

        async for pair in self.session.pairs():
            if self._clear_at is not None and not pair.live:
                self.stats.interrupt_to_idle_ms.append((time.perf_counter() - self._clear_at)
                                                       * 1000)
                self._clear_at = None
            h, w = pair.image.shape[:2]
            await av_sync.push(rtc.VideoFrame(w, h, rtc.VideoBufferType.RGB24,
                                              np.ascontiguousarray(pair.image).tobytes()))
            await av_sync.push(rtc.AudioFrame(pair.audio.tobytes(), SAMPLE_RATE, 1,
                                              pair.audio.size))
            self.stats.frames_published += 1
            self.stats.live_frames_published += int(pair.live)


RoomFactory = Callable[[], Any]


async def join_room(url: str, token: str, avatars: LocalAvatars, avatar: str = "default", *,
                    room_factory: RoomFactory | None = None,
                    connect_timeout: float = CONNECT_TIMEOUT_S) -> LiveKitAvatarWorker:
    """Open an avatar session (admission first: ``Full`` before touching LiveKit), join
    ``url`` with ``token`` as the avatar participant, and start its worker. Raises
    ``ConnectionError`` when the room cannot be joined, ``ValueError`` for a token that is
    not a LiveKit JWT."""
    require_livekit()
    from livekit import rtc

    _, sender = token_identities(token)
    session = await avatars.open(avatar)
    room = (room_factory or rtc.Room)()
    try:
        await asyncio.wait_for(room.connect(url, token, rtc.RoomOptions(auto_subscribe=False)),
                               connect_timeout)
    except BaseException as exc:
        await session.aclose("could not join the LiveKit room")
        with contextlib.suppress(Exception):
            await room.disconnect()
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise ConnectionError(f"could not join the LiveKit room at {url}: "
                              f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    worker = LiveKitAvatarWorker(room, session, sender_identity=sender)
    worker.start()
    return worker


# ---------------------------------------------------------------------- inside vivify serve
class LiveKitSessionRequest(BaseModel):
    url: str = Field(pattern=r"^(wss?|https?)://\S+$", max_length=2048,
                     description="the LiveKit server (wss://…)")
    token: str = Field(min_length=16, max_length=16384,
                       description="the avatar participant's access token, minted by the agent "
                                   "(with lk.publish_on_behalf = the agent's identity)")
    avatar: str = Field("default", max_length=200)


def add_livekit_routes(app: FastAPI, manager: SessionManager) -> None:
    """``POST /v1/livekit/sessions``: join a LiveKit room as the avatar of an agent; the
    session is one of this server's (``GET``/``DELETE /v1/sessions/{id}`` apply, admission
    and batching are shared). ``app.state.livekit_room_factory`` replaces ``rtc.Room``
    (tests)."""
    workers: dict[str, LiveKitAvatarWorker] = {}
    janitors: set[asyncio.Task[None]] = set()
    joining: set[str] = set()  # identities whose join is under way
    avatars = LocalAvatars(manager)  # never aclose()d here: that would close every session

    @app.post("/v1/livekit/sessions", status_code=201, tags=["integrations"])
    async def create_livekit_session(body: LiveKitSessionRequest) -> dict[str, Any]:
        """Join ``url`` with ``token`` as the avatar participant: receive the agent's audio
        (``lk.audio_stream``), publish the face and voice on its behalf. 201 once joined;
        the session ends on ``DELETE /v1/sessions/{id}``, when the agent leaves, or at
        shutdown."""
        try:
            require_livekit()
            identity, sender = token_identities(body.token)
        except LiveKitUnavailable as exc:
            raise ApiError(str(exc), code="livekit_unavailable", status=501) from exc
        except ValueError as exc:
            raise ApiError(str(exc), code="bad_token", status=422) from exc
        manager.avatars.get(body.avatar)
        keys = _keys(identity, sender)
        taken = set(joining).union(*(_keys(_identity(w), w.sender_identity)
                                     for w in workers.values() if not w.closed.is_set()))
        if keys & taken:
            raise Conflict(f"this server already runs the avatar {identity!r} or an avatar for "
                           f"the agent {sender!r}", code="already_joined")
        factory = getattr(app.state, "livekit_room_factory", None)
        joining.update(keys)  # a concurrent request for the same room waits for no one: 409
        try:
            worker = await join_room(body.url, body.token, avatars, body.avatar,
                                     room_factory=factory)
        except ConnectionError as exc:
            raise ApiError(str(exc), code="livekit_unreachable", status=502) from exc
        finally:
            joining.difference_update(keys)
        session_id = worker.session.id
        workers[session_id] = worker
        forget = asyncio.create_task(_forget_when_closed(workers, session_id, worker))
        janitors.add(forget)
        forget.add_done_callback(janitors.discard)
        out: dict[str, Any] = {"id": session_id, "avatar": body.avatar, "identity": identity,
                               "agent": sender, "room": worker.room.name}
        with contextlib.suppress(Exception):
            out["provenance"] = manager.get(session_id).provenance()
        return out


def _keys(identity: str, sender: str | None) -> set[str]:
    """What one avatar occupies in this process: its identity, and its agent's (the
    receiver's clear-buffer handlers are keyed by the agent's identity, process-wide)."""
    return {f"avatar:{identity}"} | ({f"agent:{sender}"} if sender else set())


def _identity(worker: LiveKitAvatarWorker) -> str:
    return str(getattr(worker.room.local_participant, "identity", "") or "")


async def _forget_when_closed(workers: dict[str, LiveKitAvatarWorker], session_id: str,
                              worker: LiveKitAvatarWorker) -> None:
    await worker.closed.wait()
    workers.pop(session_id, None)


# ---------------------------------------------------------------------- vivify livekit-worker
def ask_server(server: str, server_token: str | None, url: str, token: str,
               avatar: str = "default", timeout: float = 60.0) -> dict[str, Any]:
    """Have a running ``vivify serve`` join the room (``POST /v1/livekit/sessions``): its
    answer, or ``ConnectionError`` with the server's error. Standard library only, so this
    path needs no LiveKit packages here."""
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        server.rstrip("/") + "/v1/livekit/sessions", method="POST",
        data=json.dumps({"url": url, "token": token, "avatar": avatar}).encode(),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {server_token}"} if server_token else {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        raise ConnectionError(f"{server} answered {exc.code}: "
                              f"{exc.read().decode(errors='replace')[:300]}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(f"cannot reach {server}: {exc}") from exc


async def run_standalone(url: str, token: str, avatar: str = "default",
                         config: Any = None) -> str:
    """This process's engines as one room's avatar, until the session ends (the agent
    leaves, the room closes); returns why it ended."""
    avatars = await LocalAvatars.start(config)
    try:
        worker = await join_room(url, token, avatars, avatar)
        log.warning("joined %s as %s (session %s)", url, _identity(worker) or "the avatar",
                    worker.session.id)
        try:
            await worker.closed.wait()
        finally:
            await worker.aclose("vivify livekit-worker stopped")
        return worker.close_reason
    finally:
        await avatars.aclose()
