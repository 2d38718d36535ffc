"""An avatar session as a framework plugin sees it: PCM in, paced A/V pairs and events out.

Voice-agent frameworks (LiveKit Agents, Pipecat) hand an avatar their TTS audio and expect
video and audio back in sync, with "playback started/finished" and an interrupt. That is
exactly a broadcast session of ``vivify serve``: this module gives plugins the same session
without HTTP or WebRTC in between.

- :class:`LocalAvatars` runs the engines in this process. Built standalone (``await
  LocalAvatars.start()``), or over a running server's :class:`SessionManager`
  (``LocalAvatars(manager)``), in which case its sessions share admission, the inference
  workers and the cross-session batching with every other session of that server.
- :class:`AvatarSession` is one avatar: ``push_audio`` (int16 or float32, any sample rate,
  resampled to 16 kHz), ``segment_end``, ``interrupt``, ``set_controls``; ``pairs()`` yields
  one :class:`~vivify.streamer.media.pairs.AVPair` per 40 ms frame (the image and the 640
  samples of
  16 kHz audio that belong to it), paced in real time by the session's one pacing point;
  ``events()`` yields ``playback_started`` / ``playback_finished`` (with ``position_ms``
  and ``interrupted``) and ``error`` events, as the WebSocket API does.

The remote counterpart (a ``vivify serve`` over its API) has the same methods:
streamer/integrations/remote.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from vivify.engines.audio.audio_io import SAMPLE_RATE
from vivify.streamer.media.pairs import AVPair
from vivify.streamer.server.config import ServerConfig
from vivify.streamer.server.manager import SessionManager
from vivify.streamer.server.session import Session, VideoOptions

EVENT_QUEUE = 256  # events a plugin may leave unread before the oldest are dropped


def to_mono_float(pcm: np.ndarray | bytes, channels: int = 1) -> np.ndarray:
    """Any PCM (int16 bytes or array, or float in −1..1; interleaved channels averaged) as
    mono float32. Non-finite samples become silence, others are clipped to −1..1."""
    if isinstance(pcm, bytes | bytearray | memoryview):
        data = bytes(pcm)
        samples = np.frombuffer(data[: len(data) - len(data) % 2],
                                dtype="<i2").astype(np.float32) / 32768.0
    else:
        arr = np.asarray(pcm)
        samples = (arr.astype(np.float32) / 32768.0 if arr.dtype == np.int16
                   else arr.astype(np.float32))
    samples = samples.reshape(-1)
    if channels > 1:
        samples = samples[: samples.size - samples.size % channels].reshape(-1, channels)
        samples = samples.mean(axis=1)
    samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)


class Resampler:
    """Streaming resampling to 16 kHz mono (FFmpeg's swresample through PyAV): the filter
    state carries across chunks, so 20 ms TTS chunks join without clicks; ``flush`` returns
    the filter's last samples at a segment's end instead of carrying them into the next."""

    def __init__(self, rate: int | None = None) -> None:
        self._rate: int | None = None
        self._resampler: Any = None
        if rate is not None:
            self._reset(rate)

    def _reset(self, rate: int) -> None:
        import av

        self._rate = rate
        self._resampler = (None if rate == SAMPLE_RATE else
                           av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE))

    def __call__(self, samples: np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        rate = sample_rate or self._rate or SAMPLE_RATE
        if rate != self._rate:
            self._reset(rate)
        if self._resampler is None or samples.size == 0:
            return samples
        import av

        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        if self._resampler is None:
            return np.zeros(0, np.float32)
        return self._collect(self._resampler.resample(None))

    @staticmethod
    def _collect(frames: list[Any]) -> np.ndarray:
        out = [f.to_ndarray().reshape(-1) for f in frames]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


class SessionStreams:
    """``pairs()`` and ``events()`` over two queues: the local and the remote session differ
    only in what fills them. ``None`` on the pair queue ends ``pairs()``; the
    ``session_closed`` event ends ``events()``."""

    _pair_queue: asyncio.Queue[AVPair | None]
    _events: asyncio.Queue[dict[str, Any]]

    async def pairs(self) -> AsyncIterator[AVPair]:
        """Every played frame with its audio, in order, one per 40 ms, until the session
        ends. A consumer that falls more than a few frames behind loses its oldest."""
        while True:
            pair = await self._pair_queue.get()
            if pair is None:
                return
            yield pair

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Session events until the session ends (its last is ``session_closed``)."""
        while True:
            event = await self._events.get()
            yield event
            if event.get("code") == "session_closed":
                return


class AvatarSession(SessionStreams):
    """One avatar on the engines of this process (see the module docstring)."""

    sample_rate = SAMPLE_RATE
    fps = 25

    def __init__(self, session: Session) -> None:
        self._session = session
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(EVENT_QUEUE)
        session.sockets.add(self._on_event)
        session.consumers += 1  # a plugin pulling frames attends the session: never idle
        self._sub = session.media.subscribe()
        self._pair_queue = self._sub.video
        self._resample = Resampler()
        self._released = False

    @property
    def id(self) -> str:
        return self._session.id

    @property
    def size(self) -> int:
        return self._session.video.size

    @property
    def closed(self) -> bool:
        return self._session.closed

    def _on_event(self, event: dict[str, Any]) -> None:
        if self._events.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._events.get_nowait()
        self._events.put_nowait(event)

    def push_audio(self, pcm: np.ndarray | bytes, sample_rate: int = SAMPLE_RATE,
                   channels: int = 1) -> None:
        """Queue speech (played in real time, up to the server's buffer limit: raises
        ``OverflowError`` past it)."""
        self._session.touch()
        self._session.media.push_audio(self._resample(to_mono_float(pcm, channels),
                                                      int(sample_rate)))

    def segment_end(self) -> None:
        """The utterance is complete: ``playback_finished`` follows once it has played."""
        self._session.media.segment_end()

    def interrupt(self) -> None:
        """Drop what is queued; ``playback_finished`` with ``interrupted: true`` and the
        position reached; the face is idle again within a frame or two."""
        self._session.touch()
        self._session.media.interrupt()

    def set_controls(self, *, emotion: str | None = None, intensity: float | None = None,
                     gaze: tuple[float, float] | None = None,
                     distance: float | None = None) -> None:
        """VASA-1 style controls; clamped by the engine
        (vivify.engines.motion.controls.Controls)."""
        c = self._session.media.controls
        if emotion is not None:
            c.emotion = emotion
        if intensity is not None:
            c.intensity = intensity
        if gaze is not None:
            c.gaze = gaze
        if distance is not None:
            c.distance = distance

    def stats(self) -> dict[str, Any]:
        return self._session.stats()

    async def aclose(self, reason: str = "closed by the integration") -> None:
        if not self._released:
            self._released = True
            self._session.consumers -= 1
        await self._session.aclose(reason)  # our events() hears its session_closed
        self._session.media.unsubscribe(self._sub)
        self._session.sockets.discard(self._on_event)


class LocalAvatars:
    """The engines of this process as a source of avatar sessions."""

    def __init__(self, manager: SessionManager, owned: Any = None) -> None:
        self.manager = manager
        self._owned = owned  # the lifespan context we started, when standalone

    @classmethod
    async def start(cls, config: ServerConfig | None = None,
                    home: Path | None = None) -> LocalAvatars:
        """Standalone engines: what ``vivify serve`` runs, without its HTTP server (the face
        models, the default avatar, the driver chosen in ``config``)."""
        from vivify.streamer.server.serve import build

        config = config or ServerConfig(max_sessions=4, session_idle_timeout=0)
        app, manager = build(config, home=home)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        return cls(manager, owned=lifespan)

    async def open(self, avatar: str = "default", label: bool | None = None,
                   codec: str = "vp8") -> AvatarSession:
        """A new avatar session (admission applies: ``vivify.streamer.server.errors.Full`` when the
        engines
        are at capacity; ``NotFound`` for an unknown avatar)."""
        self.manager.avatars.get(avatar)
        session, _ = await self.manager.create(
            avatar, "broadcast", VideoOptions(size=self.manager.config.size,
                                              codec=codec),  # type: ignore[arg-type]
            None, label=label)
        return AvatarSession(session)

    async def aclose(self) -> None:
        if self._owned is not None:
            owned, self._owned = self._owned, None
            await owned.__aexit__(None, None, None)
        else:
            await self.manager.close_all("integration closed")

    async def __aenter__(self) -> LocalAvatars:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
