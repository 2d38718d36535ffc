"""Encode once, send to every viewer: one video encoder per (session, codec) for broadcasts.

aiortc encodes per ``RTCRtpSender``, so by default N viewers of one presenter cost N encodes of
the same frame — the most expensive per-viewer work on a CPU server. aiortc also accepts
*pre-encoded* media: a track whose ``recv`` returns ``av.Packet`` is only packetised
(``Encoder.pack``), not encoded. So each broadcast session runs one PyAV encoder per codec its
viewers asked for, and every viewer's track hands out copies of the same packets.

What that trades away, and how it is covered:

- **Per-viewer bitrate adaptation** (REMB): the shared stream has one fixed bitrate
  (``BITRATE``), within aiortc's own range for the codec.
- **Picture loss indication** (PLI) from one viewer cannot reach a shared encoder through
  aiortc's public API: a keyframe goes out every ``KEYFRAME_INTERVAL`` frames, and at once
  whenever a viewer joins; a joining viewer's track waits for that keyframe.

The session's main peer (mirror mode, or the presenter's own preview) keeps aiortc's
per-sender encoder, which adapts to its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
from dataclasses import dataclass
from typing import Literal

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from vivify.streamer.media.pairs import FPS, AVPair, Subscriber
from vivify.streamer.media.session_media import SessionMedia

log = logging.getLogger(__name__)

Codec = Literal["vp8", "h264"]
VIDEO_CLOCK = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
BITRATE = {"vp8": 1_000_000, "h264": 1_500_000}  # fixed: no single viewer's REMB applies
KEYFRAME_INTERVAL = 2 * FPS  # frames: how long a viewer that lost a keyframe waits at most
VIEWER_QUEUE = 8  # encoded frames a slow viewer may lag before its oldest are dropped


@dataclass(frozen=True)
class EncodedFrame:
    slot: int
    data: bytes
    keyframe: bool


def _codec_context(codec: Codec, width: int, height: int) -> av.VideoCodecContext:
    """A realtime encoder set up the way aiortc sets up its own (codecs/vpx.py, h264.py)."""
    rate = BITRATE[codec]
    if codec == "vp8":
        ctx = av.CodecContext.create("libvpx", "w")
        ctx.options = {"bufsize": str(rate), "cpu-used": "-6", "deadline": "realtime",
                       "lag-in-frames": "0", "minrate": str(rate), "maxrate": str(rate),
                       "noise-sensitivity": "4", "overshoot-pct": "15", "partitions": "0",
                       "static-thresh": "1", "undershoot-pct": "100"}
        ctx.qmin, ctx.qmax = 2, 56
    else:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.options = {"level": "31", "tune": "zerolatency", "preset": "veryfast"}
        ctx.profile = "Baseline"
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.width, ctx.height, ctx.pix_fmt, ctx.bit_rate = width, height, "yuv420p", rate
    ctx.framerate = fractions.Fraction(FPS, 1)
    ctx.time_base = fractions.Fraction(1, FPS)
    ctx.gop_size = KEYFRAME_INTERVAL
    ctx.thread_count = 1  # the server's parallelism is sessions, not threads per encode
    return ctx


class EncodedVideoTrack(MediaStreamTrack):
    """A viewer's video: the shared encoder's packets, timed from the viewer's own origin."""

    kind = "video"

    def __init__(self, fanout: VideoFanout, subscriber: Subscriber) -> None:
        super().__init__()
        self._fanout = fanout
        self._sub = subscriber  # the viewer's audio subscriber: both tracks share its origin
        self.queue: asyncio.Queue[EncodedFrame | None] = asyncio.Queue(VIEWER_QUEUE)
        self._synced = False  # nothing is sent before the first keyframe

    def request_keyframe(self) -> None:
        """Ask the shared encoder for a keyframe (an SFU relaying its subscribers' PLIs)."""
        self._fanout.request_keyframe()

    def offer(self, frame: EncodedFrame | None) -> None:
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self._synced = False  # a dropped frame breaks the prediction chain: resync
            self._fanout.request_keyframe()
        self.queue.put_nowait(frame)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        while True:
            frame = await self.queue.get()
            if frame is None:
                self.stop()
                raise MediaStreamError
            if frame.keyframe:
                self._synced = True
            if self._synced:
                break
        packet = av.Packet(frame.data)
        packet.pts = (frame.slot - self._sub.origin(frame.slot)) * (VIDEO_CLOCK // FPS)
        packet.time_base = VIDEO_TIME_BASE
        return packet

    def stop(self) -> None:
        super().stop()
        self._fanout.detach(self)


class VideoFanout:
    """One encoder for one codec of one session, feeding any number of viewer tracks."""

    def __init__(self, media: SessionMedia, codec: Codec) -> None:
        self.media = media
        self.codec = codec
        self.tracks: set[EncodedVideoTrack] = set()
        self.frames_encoded = 0
        self._sub = media.subscribe(audio=False)
        self._ctx: av.VideoCodecContext | None = None
        self._force_keyframe = True
        self._task = asyncio.create_task(self._run(), name=f"fanout-{codec}")

    def attach(self, subscriber: Subscriber) -> EncodedVideoTrack:
        track = EncodedVideoTrack(self, subscriber)
        self.tracks.add(track)
        self.request_keyframe()
        return track

    def detach(self, track: EncodedVideoTrack) -> None:
        self.tracks.discard(track)

    def request_keyframe(self) -> None:
        self._force_keyframe = True

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self.media.unsubscribe(self._sub)
        for track in list(self.tracks):
            track.offer(None)
        self.tracks.clear()

    def stats(self) -> dict[str, int]:
        return {"viewers": len(self.tracks), "frames_encoded": self.frames_encoded}

    async def _run(self) -> None:
        while (pair := await self._sub.video.get()) is not None:
            if not self.tracks:
                continue  # nobody to send to: skip the encode
            keyframe = self._force_keyframe
            self._force_keyframe = False
            try:
                data, is_key = await asyncio.to_thread(self._encode, pair, keyframe)
            except (av.FFmpegError, ValueError) as exc:  # one bad frame must not end the stream
                log.warning("shared %s encode failed: %s", self.codec, exc)
                self._ctx = None
                self._force_keyframe = True
                continue
            if not data:
                continue
            self.frames_encoded += 1
            for track in list(self.tracks):
                track.offer(EncodedFrame(pair.slot, data, is_key))
        for track in list(self.tracks):
            track.offer(None)

    def _encode(self, pair: AVPair, keyframe: bool) -> tuple[bytes, bool]:
        """Worker thread: one frame → its bitstream (with ``lag-in-frames 0``, at once)."""
        h, w = pair.image.shape[:2]
        if self._ctx is None or (self._ctx.width, self._ctx.height) != (w, h):
            self._ctx, keyframe = _codec_context(self.codec, w, h), True
        frame = av.VideoFrame.from_ndarray(pair.image, format="rgb24").reformat(
            format="yuv420p")
        frame.pts = pair.slot
        frame.time_base = fractions.Fraction(1, FPS)
        frame.pict_type = (av.video.frame.PictureType.I if keyframe
                           else av.video.frame.PictureType.NONE)
        packets = self._ctx.encode(frame)
        return b"".join(bytes(p) for p in packets), any(p.is_keyframe for p in packets)
