"""aiortc tracks that play a session's pairs: no pacing here, the session's ticker paces.

Timestamps come from the pair's slot number, so video (90 kHz) and audio (16 kHz) of the same
slot carry the same media time and the receiver's RTCP-based lip sync lines them up.
"""

from __future__ import annotations

import fractions

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from vivify.engines.audio.audio_io import SAMPLE_RATE, SAMPLES_PER_FRAME
from vivify.streamer.media.pairs import FPS, AVPair, Subscriber

VIDEO_CLOCK = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
AUDIO_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
AUDIO_PACKET = SAMPLES_PER_FRAME // 2  # 20 ms: what Opus packs per packet


class AvatarVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, subscriber: Subscriber) -> None:
        super().__init__()
        self._sub = subscriber

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pair = await self._sub.video.get()
        if pair is None:
            self.stop()
            raise MediaStreamError
        frame = av.VideoFrame.from_ndarray(pair.image, format="rgb24")
        frame.pts = (pair.slot - self._sub.origin(pair.slot)) * (VIDEO_CLOCK // FPS)
        frame.time_base = VIDEO_TIME_BASE
        return frame


class AvatarAudioTrack(MediaStreamTrack):
    """The session's audio, 20 ms at a time, in step with the video of the same slots."""

    kind = "audio"

    def __init__(self, subscriber: Subscriber) -> None:
        super().__init__()
        self._sub = subscriber
        self._current: AVPair | None = None
        self._half = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._current is None or self._half == 2:
            pair = await self._sub.audio.get()
            if pair is None:
                self.stop()
                raise MediaStreamError
            self._current, self._half = pair, 0
        pair = self._current
        chunk = pair.audio[self._half * AUDIO_PACKET:(self._half + 1) * AUDIO_PACKET]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        origin = self._sub.origin(pair.slot)
        frame.pts = (pair.slot - origin) * SAMPLES_PER_FRAME + self._half * AUDIO_PACKET
        frame.time_base = AUDIO_TIME_BASE
        self._half += 1
        return frame
