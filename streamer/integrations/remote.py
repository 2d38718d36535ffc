"""Avatar sessions of a running ``vivify serve``, with the methods of the in-process ones.

A plugin that runs its voice agent on one machine and Vivify on another (a GPU box, a shared
server) opens a *broadcast* session over the public API (docs/api.md, through the one API client
:mod:`vivify.streamer.client`) and drives it the way
:class:`~vivify.streamer.integrations.avatar_session.AvatarSession` is driven:

- the session's video and audio come back over WebRTC to an aiortc peer in this process; ICE
  gathers only the servers given here (none by default: host candidates), never aiortc's default
  public STUN server;
- PCM, ``segment_end``, ``interrupt`` and ``controls`` go over the session's WebSocket, and its
  events (``playback_started``, ``playback_finished``, ``error`` … ``session_closed``) come back
  on it;
- :class:`PairAssembler` rebuilds the server's (frame, 40 ms of audio) pairs from the two
  received tracks. The server stamps video and audio of one slot with the same media time and
  both tracks start together, so each track's pts since its own first frame is the shared slot
  grid (as ``vivify talk`` records them); jitter and the two decoders' different delays then
  cannot shift a frame against its audio. A frame waits for its audio at most ``max_wait``.

What differs from in-process: ``push_audio`` cannot raise on a full buffer (the server answers
with a ``buffer_full`` error event), and a pair's ``live`` flag is read from its decoded audio
(Opus), so a pause inside speech counts as not live.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import Any

import numpy as np

from vivify.engines.audio.audio_io import SAMPLE_RATE, SAMPLES_PER_FRAME, float_to_pcm16
from vivify.streamer.client import ApiClient, ClientError, offer_peer
from vivify.streamer.client.timeline import MediaTimeline
from vivify.streamer.integrations.avatar_session import Resampler, SessionStreams, to_mono_float
from vivify.streamer.media.pairs import FPS, AVPair

log = logging.getLogger(__name__)

WS_CHUNK_BYTES = 32 * 1024  # PCM bytes per WebSocket message (1 s; the server takes ≤ 64 KiB)
PAIR_QUEUE = 8  # pairs a slow consumer may lag before its oldest are dropped (as in-process)
EVENT_QUEUE = 256
MAX_WAIT_S = 0.12  # how long a received frame waits for its audio before it goes with silence
AUDIO_SLACK = SAMPLE_RATE // 50  # 20 ms: audio pts jitter tolerated before padding or trimming
MAX_FILL_SLOTS = FPS  # a video gap up to 1 s is filled by repeating the last frame
MAX_AUDIO_AHEAD = 10 * SAMPLE_RATE  # audio kept for frames that have not come (video stalled)
LIVE_LEVEL = 64  # int16 peak above which a decoded block counts as carrying speech
AUDIO_PREFETCH = 1  # received Opus packets held for reordering (aiortc holds 4 = 80 ms)
CLOSE_WAIT_S = 2.0
DELETE_TIMEOUT_S = 5.0  # the DELETE that ends a session on the way out


RemoteError = ClientError  # the name this module gave the server's refusals before the client


class PairAssembler:
    """Received video frames and audio → :class:`AVPair` on the server's slot grid.

    Plain bookkeeping, no I/O: fed decoded frames, asked for the pairs that are complete (their
    640 samples have arrived) or that have waited ``max_wait``. Lost audio becomes silence,
    a video gap repeats the last frame, a duplicate or late frame is dropped.
    """

    def __init__(self, max_wait: float = MAX_WAIT_S) -> None:
        self.max_wait = max_wait
        self._video_time = MediaTimeline()
        self._audio_time = MediaTimeline()
        self._resampler: Any = None
        self._audio = np.zeros(0, np.int16)
        self._audio_start = 0  # sample index (16 kHz, since the first audio frame) of _audio[0]
        self._frames: deque[tuple[int, np.ndarray, float]] = deque()
        self._next: int | None = None  # next slot to emit
        self._last_image: np.ndarray | None = None
        self.stats = {"pairs": 0, "repeated_frames": 0, "dropped_frames": 0,
                      "silent_padding_samples": 0}

    @property
    def _audio_end(self) -> int:
        return self._audio_start + self._audio.size

    def add_video(self, frame: Any, now: float) -> None:
        """One decoded ``av.VideoFrame`` (its pts is the RTP timestamp)."""
        import fractions

        t = self._video_time.seconds(int(frame.pts or 0),
                                     frame.time_base or fractions.Fraction(1, 90_000))
        slot = round(t * FPS)
        if self._next is None:
            self._next = slot
        if slot < self._next or (self._frames and slot <= self._frames[-1][0]):
            self.stats["dropped_frames"] += 1
            return
        self._frames.append((slot, frame.to_ndarray(format="rgb24"), now))

    def add_audio(self, frame: Any) -> None:
        """One decoded ``av.AudioFrame`` (any rate and layout; resampled to 16 kHz mono)."""
        import fractions

        import av

        t = self._audio_time.seconds(int(frame.pts or 0),
                                     frame.time_base or fractions.Fraction(1, frame.sample_rate))
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        parts = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        x = np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)
        expected = round(t * SAMPLE_RATE)
        gap = expected - self._audio_end
        if gap > AUDIO_SLACK:  # lost packets: keep the grid
            x = np.concatenate([np.zeros(gap, np.int16), x])
        elif -gap > AUDIO_SLACK:  # audio we already have time for: drop it rather than drift
            x = x[min(-gap - AUDIO_SLACK, x.size):]
        self._audio = np.concatenate([self._audio, x])
        if self._audio.size > MAX_AUDIO_AHEAD:  # no video for a while: bound the memory
            cut = self._audio.size - MAX_AUDIO_AHEAD
            self._audio, self._audio_start = self._audio[cut:], self._audio_start + cut

    def ready(self, now: float) -> list[AVPair]:
        """The pairs that can go now, in slot order."""
        out: list[AVPair] = []
        while self._frames and self._next is not None:
            slot, image, arrived = self._frames[0]
            if slot - self._next > MAX_FILL_SLOTS:  # a long stall: skip ahead, do not burst
                self._next = slot
            if (self._audio_end < (self._next + 1) * SAMPLES_PER_FRAME
                    and now - arrived < self.max_wait):
                break  # its audio is still on the way
            if slot > self._next and self._last_image is not None:
                out.append(self._pair(self._next, self._last_image))
                self.stats["repeated_frames"] += 1
                continue
            self._frames.popleft()
            out.append(self._pair(slot, image))
        return out

    def _pair(self, slot: int, image: np.ndarray) -> AVPair:
        start = slot * SAMPLES_PER_FRAME
        block = np.zeros(SAMPLES_PER_FRAME, np.int16)
        lo, hi = max(start, self._audio_start), min(start + SAMPLES_PER_FRAME, self._audio_end)
        if hi > lo:
            a = self._audio_start
            block[lo - start:hi - start] = self._audio[lo - a:hi - a]
        self.stats["silent_padding_samples"] += SAMPLES_PER_FRAME - max(0, hi - lo)
        used = max(0, start + SAMPLES_PER_FRAME - self._audio_start)  # late audio is dropped
        self._audio = self._audio[used:]
        self._audio_start += used
        self._next, self._last_image = slot + 1, image
        self.stats["pairs"] += 1
        live = bool(np.abs(block.astype(np.int32)).max() > LIVE_LEVEL)
        return AVPair(slot, image, block, live)


class RemoteAvatarSession(SessionStreams):
    """One broadcast session of a remote server (see the module docstring). Made by
    :meth:`RemoteAvatars.open`; same methods as the in-process ``AvatarSession``."""

    sample_rate = SAMPLE_RATE
    fps = FPS

    def __init__(self, owner: RemoteAvatars, info: dict[str, Any], pc: Any, ws: Any,
                 size: int) -> None:
        self._owner = owner
        self.info = info  # the server's answer to POST /v1/sessions (id, provenance, ...)
        self._pc, self._ws = pc, ws
        self._size = size
        self._assembler = PairAssembler()
        self._resample = Resampler()
        self._pair_queue: asyncio.Queue[AVPair | None] = asyncio.Queue(PAIR_QUEUE)
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(EVENT_QUEUE)
        self._outbox: asyncio.Queue[bytes | str] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._closed = False
        self._saw_closed = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def id(self) -> str:
        return str(self.info["id"])

    @property
    def size(self) -> int:
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    def _start(self) -> None:
        from vivify.streamer.rtc.peer import shorten_audio_jitter_buffer

        for receiver in self._pc.getReceivers():
            track = receiver.track
            if track.kind == "audio":
                shorten_audio_jitter_buffer(self._pc, track, AUDIO_PREFETCH)
            self._tasks.append(asyncio.create_task(self._pull(track), name=f"vivify-{track.kind}"))
        self._tasks += [asyncio.create_task(self._assemble(), name="vivify-pairs"),
                        asyncio.create_task(self._read_ws(), name="vivify-ws-in"),
                        asyncio.create_task(self._write_ws(), name="vivify-ws-out")]

    # ------------------------------------------------------------------ driving
    def push_audio(self, pcm: np.ndarray | bytes, sample_rate: int = SAMPLE_RATE,
                   channels: int = 1) -> None:
        """Queue speech for the server (int16 or float, any rate: sent as 16 kHz s16le)."""
        if self._closed:
            return
        data = float_to_pcm16(self._resample(to_mono_float(pcm, channels), int(sample_rate)))
        for i in range(0, len(data), WS_CHUNK_BYTES):
            self._outbox.put_nowait(data[i:i + WS_CHUNK_BYTES])

    def segment_end(self) -> None:
        self._send({"type": "segment_end"})

    def interrupt(self) -> None:
        """Drop the speech not yet sent, then ask the server to drop what it has queued."""
        kept = []
        while not self._outbox.empty():
            item = self._outbox.get_nowait()
            if isinstance(item, str):
                kept.append(item)
        for item in kept:
            self._outbox.put_nowait(item)
        self._send({"type": "interrupt"})

    def set_controls(self, *, emotion: str | None = None, intensity: float | None = None,
                     gaze: tuple[float, float] | None = None,
                     distance: float | None = None) -> None:
        fields = {"emotion": emotion, "intensity": intensity,
                  "gaze": list(gaze) if gaze is not None else None, "distance": distance}
        self._send({"type": "controls", **{k: v for k, v in fields.items() if v is not None}})

    def _send(self, message: dict[str, Any]) -> None:
        if not self._closed:
            self._outbox.put_nowait(json.dumps(message))

    # ------------------------------------------------------------------ media and events
    def stats(self) -> dict[str, Any]:
        return {"id": self.id, "connection": self._pc.connectionState, **self._assembler.stats}

    async def _pull(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self._assembler.add_video(frame, time.monotonic())
                else:
                    self._assembler.add_audio(frame)
                self._wake.set()
        if track.kind == "video":
            self._offer(None)

    async def _assemble(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1 / FPS)
            self._wake.clear()
            for pair in self._assembler.ready(time.monotonic()):
                self._offer(pair)

    def _offer(self, pair: AVPair | None) -> None:
        if self._pair_queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._pair_queue.get_nowait()
        self._pair_queue.put_nowait(pair)

    def _event(self, event: dict[str, Any]) -> None:
        if event.get("code") == "session_closed":
            if self._saw_closed:
                return
            self._saw_closed = True
        if self._events.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._events.get_nowait()
        self._events.put_nowait(event)

    async def _read_ws(self) -> None:
        try:
            async for message in self._ws:
                if isinstance(message, str):
                    with contextlib.suppress(ValueError):
                        self._event(json.loads(message))
        except Exception as exc:  # a dropped connection ends the session like a close does
            log.info("vivify session %s: WebSocket ended: %s", self.id, exc)
        self._event({"type": "error", "code": "session_closed",
                     "message": "the session's WebSocket closed"})
        self._offer(None)

    async def _write_ws(self) -> None:
        while True:
            item = await self._outbox.get()
            await self._ws.send(item)

    async def aclose(self, reason: str = "closed by the integration") -> None:
        """End the session on the server (``DELETE``), then the WebSocket and the peer."""
        if self._closed:
            return
        self._closed = True
        self._owner._sessions.discard(self)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._owner._api.delete_session(self.id), DELETE_TIMEOUT_S)
        reader = next((t for t in self._tasks if t.get_name() == "vivify-ws-in"), None)
        if reader is not None:  # its session_closed event, then the server's close frame
            await asyncio.wait({reader}, timeout=CLOSE_WAIT_S)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(Exception):
            await self._ws.close()
        with contextlib.suppress(Exception):
            await self._pc.close()
        self._event({"type": "error", "code": "session_closed", "message": reason})
        self._offer(None)


class RemoteAvatars:
    """A running ``vivify serve`` as a source of avatar sessions (the remote counterpart of
    :class:`~vivify.streamer.integrations.avatar_session.LocalAvatars`)."""

    def __init__(self, url: str, token: str | None = None, *,
                 ice_servers: tuple[str, ...] = (), timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.ice_servers = ice_servers
        self._api = ApiClient(self.url, token, timeout=timeout)
        self._sessions: set[RemoteAvatarSession] = set()

    async def open(self, avatar: str = "default", label: bool | None = None,
                   codec: str = "vp8", size: int = 512) -> RemoteAvatarSession:
        """A new broadcast session; :class:`~vivify.streamer.client.ClientError` with the
        server's code when refused (``server_full``, ``unknown_avatar``, ``unauthorized``...)."""
        pc = offer_peer("presenter", ice_servers=self.ice_servers)
        info: dict[str, Any] | None = None
        try:
            body: dict[str, Any] = {"avatar": avatar, "mode": "broadcast",
                                    "video": {"fps": FPS, "size": size, "codec": codec}}
            if label is not None:
                body["label"] = label
            info = await self._api.create_session(pc, body)
            ws = await self._api.open_websocket(str(info["id"]))
        except BaseException:
            if info is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._api.delete_session(str(info["id"])),
                                           DELETE_TIMEOUT_S)
            await pc.close()
            raise
        session = RemoteAvatarSession(self, info, pc, ws, size)
        self._sessions.add(session)
        session._start()
        return session

    async def aclose(self) -> None:
        for session in list(self._sessions):
            await session.aclose("integration closed")
        await self._api.aclose()

    async def __aenter__(self) -> RemoteAvatars:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
