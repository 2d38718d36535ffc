"""aiortc peers for the benchmarks: a logged microphone, and receivers that note when every
frame arrives. The offer, the request and the answer are :mod:`vivify.streamer.client`'s.

All times are ``time.monotonic()`` in this process: a frame's arrival is taken when aiortc
hands it over decoded, a microphone frame's send time when it is handed to aiortc.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

    from vivify.streamer.client import ApiClient

SEND_RATE = 48_000  # Hz: the microphone track's rate (what a browser sends to Opus)
SEND_FRAME = SEND_RATE // 50  # 960 samples = 20 ms per frame handed to aiortc


class LoggedAudioTrack(MediaStreamTrack):
    """A microphone stand-in: plays ``signal`` (48 kHz float) in 20 ms frames paced by the wall
    clock, and logs in :attr:`sent` the ``time.monotonic()`` at which frame ``k`` was handed to
    aiortc (``sent[k]``): the send time of samples ``k·960 … k·960+959``."""

    kind = "audio"

    def __init__(self, signal: np.ndarray) -> None:
        super().__init__()
        self.pcm = np.clip(np.rint(signal * 32767), -32768, 32767).astype(np.int16)
        self.sent: list[float] = []
        self._start: float | None = None
        self._time_base = fractions.Fraction(1, SEND_RATE)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        k = len(self.sent)
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + k * SEND_FRAME / SEND_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        chunk = self.pcm[k * SEND_FRAME:(k + 1) * SEND_FRAME]
        if chunk.size < SEND_FRAME:
            chunk = np.concatenate([chunk, np.zeros(SEND_FRAME - chunk.size, np.int16)])
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SEND_RATE
        frame.pts = k * SEND_FRAME
        frame.time_base = self._time_base
        self.sent.append(time.monotonic())
        return frame


@dataclass
class Peer:
    """One client peer connection: an optional logged microphone (``signal``, 48 kHz), the
    received video frames' arrival times (and what ``keep`` takes of each decoded frame, e.g.
    the mouth box), and the received audio with its arrival times."""

    signal: np.ndarray | None = None
    keep: Callable[[Any], np.ndarray] | None = None
    video_t: list[float] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    audio_t: list[float] = field(default_factory=list)
    audio: list[np.ndarray] = field(default_factory=list)
    audio_rate: int = 48_000
    t_post: float | None = None
    session: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.first_frame = asyncio.Event()
        self.track = LoggedAudioTrack(self.signal) if self.signal is not None else None
        self.pc: RTCPeerConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def first_video(self) -> float | None:
        return self.video_t[0] if self.video_t else None

    async def _offer(self, mode: str) -> RTCPeerConnection:
        from vivify.streamer.client import offer_peer

        pc = self.pc = offer_peer(mode, self.track)

        @pc.on("track")
        def on_track(track: Any) -> None:
            self._tasks.append(asyncio.ensure_future(self._pull(track)))

        # The offer is made before the clock starts: ``t_post`` is when the request goes out.
        await pc.setLocalDescription(await pc.createOffer())
        self.t_post = time.monotonic()
        return pc

    async def open(self, api: ApiClient, body: dict[str, Any]) -> dict[str, Any]:
        """Create a session (``body`` + this peer's offer) and start receiving; its JSON.
        With a ``signal`` the peer is a mirror's microphone, else it only receives."""
        pc = await self._offer("mirror" if self.track is not None else "broadcast")
        self.session = await api.create_session(pc, body)
        return self.session

    async def watch(self, api: ApiClient, session_id: str) -> dict[str, Any]:
        """Join ``session_id`` as a viewer (receive-only) and start receiving."""
        self.session = await api.add_viewer(session_id, await self._offer("viewer"))
        return self.session

    async def _pull(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if track.kind == "video":
                    if self.keep is not None:
                        self.crops.append(self.keep(frame))
                    self.video_t.append(now)
                    self.first_frame.set()
                else:
                    x = frame.to_ndarray().astype(np.float32).reshape(-1)
                    channels = len(frame.layout.channels)
                    if channels > 1:
                        x = x.reshape(-1, channels).mean(axis=1)
                    self.audio_rate = frame.sample_rate
                    self.audio.append(x / 32768.0)
                    self.audio_t.append(now)
        except MediaStreamError:
            return
        except Exception as exc:  # keep the measurement going; report it
            self.errors.append(f"{track.kind}: {exc!r}")

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        if self.track is not None:
            self.track.stop()
        if self.pc is not None:
            await self.pc.close()
