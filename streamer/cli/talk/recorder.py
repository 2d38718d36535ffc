"""``--save``: the received call as an MP4, on the media clock, encoded off the event loop."""

from __future__ import annotations

import asyncio
import fractions
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vivify.streamer.client.timeline import MediaTimeline

if TYPE_CHECKING:
    import av

    from vivify.streamer.offline.video_writer import Mp4Writer

AUDIO_RATE = 16_000  # Hz of the recorded audio: the API's PCM rate
RECORD_BACKLOG = 50  # video frames waiting for the encoder before new ones are dropped
MAX_PENDING_AUDIO = 60  # s of audio held for a recording whose video has not started


class Recorder:
    """Received frames → an MP4 (H.264 + AAC, via
    :class:`~vivify.streamer.offline.video_writer.Mp4Writer`).

    Each stream's media time (pts since its own first frame) is mapped onto the writer's
    constant grids: frame ``k`` at ``k / fps``, audio sample ``n`` at ``n / audio_rate``. A video
    gap repeats the last frame, a late or duplicate frame is dropped; an audio gap (lost packets)
    is padded with silence and an overlap trimmed, within ``slack`` so jitter never adds clicks.
    Not thread-safe: :class:`Talk` calls it from one worker thread.
    """

    def __init__(self, path: Path, fps: int = 25, audio_rate: int = AUDIO_RATE,
                 slack: float = 0.02) -> None:
        self.path = path
        self.fps = fps
        self.audio_rate = audio_rate
        self.slack_samples = int(slack * audio_rate)
        self.frames = 0
        self.repeated = 0
        self.skipped = 0
        self._writer: Mp4Writer | None = None
        self._size: tuple[int, int] | None = None
        self._video_time = MediaTimeline()
        self._audio_time = MediaTimeline()
        self._last_rgb: Any = None
        self._resampler: Any = None
        self._pending_audio: list[Any] = []  # audio that arrived before the first video frame
        self._samples = 0  # audio samples placed on the grid (written or pending)

    def add_video(self, frame: av.VideoFrame) -> None:
        t = self._video_time.seconds(int(frame.pts or 0), frame.time_base or
                                     fractions.Fraction(1, 90_000))
        index = round(t * self.fps)
        if index < self.frames:
            self.skipped += 1
            return
        if self._writer is None:
            self._open(frame.width, frame.height)
        assert self._writer is not None and self._size is not None
        if (frame.width, frame.height) != self._size:
            frame = frame.reformat(width=self._size[0], height=self._size[1])
        while self.frames < index and self._last_rgb is not None:
            self._writer.write_frame(self._last_rgb)
            self.frames += 1
            self.repeated += 1
        self._last_rgb = frame.to_ndarray(format="rgb24")
        self._writer.write_frame(self._last_rgb)
        self.frames = max(self.frames, index) + 1

    def add_audio(self, frame: av.AudioFrame) -> None:
        import av
        import numpy as np

        t = self._audio_time.seconds(int(frame.pts or 0), frame.time_base or
                                     fractions.Fraction(1, frame.sample_rate))
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout="mono",
                                                rate=self.audio_rate)
        expected = round(t * self.audio_rate)
        if expected - self._samples > self.slack_samples:  # lost packets: keep the grid
            self._emit_audio(np.zeros(expected - self._samples, np.float32))
        trim = self._samples - expected - self.slack_samples
        for out in self._resampler.resample(frame):
            x = np.asarray(out.to_ndarray(), np.float32).reshape(-1)
            if trim > 0:  # audio we already have time for: drop it rather than drift
                cut = min(trim, x.size)
                x, trim = x[cut:], trim - cut
            self._emit_audio(x)

    def _emit_audio(self, x: Any) -> None:
        if x.size == 0:
            return
        self._samples += x.size
        if self._writer is None:
            self._pending_audio.append(x)
            while sum(a.size for a in self._pending_audio) > MAX_PENDING_AUDIO * self.audio_rate:
                self._pending_audio.pop(0)  # still no video after a minute: bound the memory
        else:
            self._writer.write_audio(x)

    def _open(self, width: int, height: int) -> None:
        from vivify.streamer.offline.video_writer import Mp4Writer

        width, height = width - width % 2, height - height % 2
        self._size = (width, height)
        self._writer = Mp4Writer(self.path, width=width, height=height, fps=self.fps,
                                 audio_rate=self.audio_rate,
                                 metadata={"comment": "AI-generated talking-head video "
                                           "recorded by vivify talk"})
        for x in self._pending_audio:
            self._writer.write_audio(x)
        self._pending_audio.clear()

    @property
    def audio_seconds(self) -> float:
        return self._samples / self.audio_rate

    def close(self) -> bool:
        """Finish the file; ``False`` (and no file) when no video ever arrived."""
        if self._writer is None:
            return False
        self._writer.close()
        return True

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()



class BackgroundRecorder:
    """A :class:`Recorder` fed from the event loop, encoding on one worker thread.

    Why a bounded backlog of video: H.264 encoding can fall behind on a busy machine; the loop
    must never wait for it (RTP, DTLS and the decoders run there), so past ``RECORD_BACKLOG``
    frames in flight a new frame is dropped and counted — the recorder repeats its neighbour on
    the grid. Audio is never dropped. A failed write stops the recording and is reported once.
    """

    def __init__(self, path: Path) -> None:
        self.recorder = Recorder(path)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="vivify-record")
        self._slots = threading.BoundedSemaphore(RECORD_BACKLOG)
        self.dropped = 0
        self.failed: BaseException | None = None

    def add(self, kind: str, frame: Any) -> None:
        """Queue one received frame (``kind`` "video" or "audio") for the encoder thread."""
        if self.failed is not None:
            return
        if kind == "video" and not self._slots.acquire(blocking=False):
            self.dropped += 1  # the encoder is behind: drop video, never the loop
            return
        recorder = self.recorder

        def write() -> None:
            try:
                if kind == "video":
                    recorder.add_video(frame)
                else:
                    recorder.add_audio(frame)
            except Exception as exc:
                self.failed = exc
            finally:
                if kind == "video":
                    self._slots.release()

        self._pool.submit(write)

    async def finish(self, status: Callable[[str], None]) -> bool:
        """Drain the queue and close the file; ``True`` if an MP4 was saved (warnings to
        ``status`` otherwise)."""
        await asyncio.to_thread(self._pool.shutdown, wait=True)
        if self.failed is not None:
            self.recorder.abort()
            status(f"warning: recording failed, nothing saved: {self.failed}")
            return False
        if self.dropped:
            status(f"warning: the encoder fell behind; {self.dropped} received "
                   "frames were not recorded (their neighbours were repeated)")
        if await asyncio.to_thread(self.recorder.close):
            return True
        status("warning: no video arrived; nothing saved")
        return False
