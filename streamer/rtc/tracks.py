"""aiortc tracks that play a session's pairs: no pacing here, the session's ticker paces.

Timestamps come from the pair's slot number, so video (90 kHz) and audio (16 kHz) of the same
slot carry the same media time and the receiver's RTCP-based lip sync lines them up.
"""

from __future__ import annotations

import fractions
from collections.abc import Awaitable, Callable
from typing import TypeVar

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from vivify.engines.audio.audio_io import SAMPLE_RATE, SAMPLES_PER_FRAME
from vivify.streamer.media.pairs import FPS, AVPair, Subscriber

VIDEO_CLOCK = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
AUDIO_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
AUDIO_PACKET = SAMPLES_PER_FRAME // 2  # 20 ms: what Opus packs per packet

T = TypeVar("T")


async def next_or_end(track: MediaStreamTrack, source: Callable[[], Awaitable[T | None]]) -> T:
    """The next item for ``track`` from ``source``, or the end of the track when ``source``
    says ``None``: a stopped track and ``MediaStreamError``, which is how aiortc's senders
    learn that a stream ended (a track read after it stopped ends the same way)."""
    if track.readyState != "live":
        raise MediaStreamError
    item = await source()
    if item is None:
        track.stop()
        raise MediaStreamError
    return item


class _SubscriberTrack(MediaStreamTrack):
    """A track that plays what one :class:`Subscriber` of the session's pairs receives."""

    def __init__(self, subscriber: Subscriber) -> None:
        super().__init__()
        self._sub = subscriber


class AvatarVideoTrack(_SubscriberTrack):
    """The session's video, one frame a slot."""

    kind = "video"

    async def recv(self) -> av.VideoFrame:
        pair = await next_or_end(self, self._sub.video.get)
        frame = av.VideoFrame.from_ndarray(pair.image, format="rgb24")
        frame.pts = (pair.slot - self._sub.origin(pair.slot)) * (VIDEO_CLOCK // FPS)
        frame.time_base = VIDEO_TIME_BASE
        return frame


class AvatarAudioTrack(_SubscriberTrack):
    """The session's audio, 20 ms at a time, in step with the video of the same slots."""

    kind = "audio"

    def __init__(self, subscriber: Subscriber) -> None:
        super().__init__(subscriber)
        self._current: AVPair | None = None
        self._half = 0

    async def recv(self) -> av.AudioFrame:
        if self._current is None or self._half == 2:
            self._current, self._half = await next_or_end(self, self._sub.audio.get), 0
        elif self.readyState != "live":
            raise MediaStreamError
        pair = self._current
        chunk = pair.audio[self._half * AUDIO_PACKET:(self._half + 1) * AUDIO_PACKET]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        origin = self._sub.origin(pair.slot)
        frame.pts = (pair.slot - origin) * SAMPLES_PER_FRAME + self._half * AUDIO_PACKET
        frame.time_base = AUDIO_TIME_BASE
        self._half += 1
        return frame
