"""Offline render output: H.264 + AAC in MP4, written atomically.

Why it is built this way:

- Timestamps come from counters (frame index for video, samples written for audio), never from a
  clock, so a render is reproducible and A/V sync is exact by construction: frame ``k`` is shown
  at ``k / fps`` seconds, sample ``n`` plays at ``n / audio_rate`` seconds.
- Packets go through ``container.mux``, which interleaves by timestamp (libavformat's
  interleaving queue), so callers may write audio and video in any order; writing each frame's
  audio next to the frame keeps that queue short.
- The file is written under a hidden temporary name in the target folder and moved into place
  with an atomic rename only after the encoders were flushed and the container closed: a crash,
  an exception inside ``with Mp4Writer(...)``, or :meth:`Mp4Writer.abort` never leaves a
  half-written file under the final name (same folder, so the rename is atomic).
- ``movflags=+faststart`` puts the index first, so browsers start playing before the download
  ends; ``+use_metadata_tags`` keeps any metadata key (e.g. the rig version), not only the
  handful iTunes defines. libavformat always overwrites the ``encoder`` tag with its own name, so
  the AI-generated disclosure lives in ``comment`` (and anything the caller adds).
"""

from __future__ import annotations

import os
import secrets
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Self

import av
import numpy as np

DEFAULT_FPS = 25  # frames per second
DEFAULT_AUDIO_RATE = 16_000  # Hz: the engines' audio rate; AAC is fine at 16 kHz mono
DEFAULT_CRF = 20  # x264 constant rate factor: visually near-lossless for portraits
X264_PRESET = "veryfast"  # ~2× faster than "medium" at ~10 % more bits: renders stay CPU-cheap
VIDEO_CODEC = "libx264"
AUDIO_CODEC = "aac"
PIXEL_FORMAT = "yuv420p"  # what every browser and phone decodes
AUDIO_BITRATE = 64_000  # bit/s: plenty for 16 kHz mono speech
MOV_FLAGS = "+faststart+use_metadata_tags"
DEFAULT_METADATA: dict[str, str] = {
    "comment": "AI-generated talking-head video made with vivify",
    "ai_generated": "true",
}

__all__ = ["DEFAULT_METADATA", "Mp4Writer"]


class Mp4Writer:
    """Write RGB frames and mono float audio to an MP4 file (H.264 + AAC).

    Use as a context manager: a normal exit finishes the file, an exception discards it::

        with Mp4Writer("out.mp4", width=512, height=512) as writer:
            for rgb, audio in frames:
                writer.write_frame(rgb)      # (512, 512, 3) uint8
                writer.write_audio(audio)    # (640,) float32 at 16 kHz

    ``audio_rate=None`` writes a video-only file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        width: int,
        height: int,
        fps: int = DEFAULT_FPS,
        audio_rate: int | None = DEFAULT_AUDIO_RATE,
        metadata: dict[str, str] | None = None,
        crf: int = DEFAULT_CRF,
    ) -> None:
        _validate(width, height, fps, audio_rate, crf)
        self.path = Path(path)
        self.width, self.height, self.fps = width, height, fps
        self.audio_rate = audio_rate
        self._frames = 0
        self._samples = 0
        self._closed = False
        self._tmp = _temp_path(self.path)
        try:
            self._container = av.open(str(self._tmp), mode="w", format="mp4",
                                      options={"movflags": MOV_FLAGS})
            for key, value in {**DEFAULT_METADATA, **(metadata or {})}.items():
                self._container.metadata[key] = value
            self._video = _add_video(self._container, width, height, fps, crf)
            self._audio = _add_audio(self._container, audio_rate) if audio_rate else None
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    @property
    def frames_written(self) -> int:
        return self._frames

    @property
    def audio_samples_written(self) -> int:
        return self._samples

    @property
    def closed(self) -> bool:
        return self._closed

    def write_frame(self, rgb: np.ndarray) -> None:
        """Append one (height, width, 3) uint8 RGB frame, shown at ``frames_written / fps``."""
        self._check_open()
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"expected a ({self.height}, {self.width}, 3) uint8 frame, "
                             f"got {rgb.shape} {rgb.dtype}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self._frames
        frame.time_base = Fraction(1, self.fps)
        self._mux(self._video.encode(frame))
        self._frames += 1

    def write_audio(self, samples: np.ndarray) -> None:
        """Append mono float audio in [-1, 1] at ``audio_rate`` (clipped; any length)."""
        self._check_open()
        if self._audio is None or self.audio_rate is None:
            raise ValueError("this writer was created without audio (audio_rate=None)")
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected mono samples of shape (n,), got {x.shape}")
        if x.size == 0:
            return
        x = np.clip(x, -1.0, 1.0).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(x, format="flt", layout="mono")
        frame.sample_rate = self.audio_rate
        frame.pts = self._samples
        frame.time_base = Fraction(1, self.audio_rate)
        self._mux(self._audio.encode(frame))
        self._samples += x.shape[1]

    def close(self) -> None:
        """Flush the encoders, finish the file and move it to ``path``; safe to call twice.

        If finishing fails, the temporary file is removed and the error propagates.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._mux(self._video.encode(None))
            if self._audio is not None:
                self._mux(self._audio.encode(None))
            self._container.close()
            self._tmp.replace(self.path)
        except BaseException:
            self._discard()
            raise

    def abort(self) -> None:
        """Stop without producing a file (error paths, cancelled renders); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._discard()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- internals --

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            self._container.mux(packet)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"writer for {self.path} is closed")

    def _discard(self) -> None:
        try:
            self._container.close()
        except av.error.FFmpegError:
            pass  # the container may be half-finished; the file goes anyway
        finally:
            self._tmp.unlink(missing_ok=True)


def _add_video(
    container: av.container.OutputContainer, width: int, height: int, fps: int, crf: int
) -> av.VideoStream:
    stream = container.add_stream(VIDEO_CODEC, rate=fps,
                                  options={"crf": str(crf), "preset": X264_PRESET})
    if not isinstance(stream, av.VideoStream):  # pragma: no cover - libx264 is a video codec
        raise TypeError(f"{VIDEO_CODEC} did not give a video stream")
    stream.width, stream.height = width, height
    stream.pix_fmt = PIXEL_FORMAT
    return stream


def _add_audio(container: av.container.OutputContainer, rate: int) -> av.AudioStream:
    stream = container.add_stream(AUDIO_CODEC, rate=rate, layout="mono")
    if not isinstance(stream, av.AudioStream):  # pragma: no cover - aac is an audio codec
        raise TypeError(f"{AUDIO_CODEC} did not give an audio stream")
    stream.bit_rate = AUDIO_BITRATE
    return stream


def _validate(width: int, height: int, fps: int, audio_rate: int | None, crf: int) -> None:
    """yuv420p halves chroma in both axes, so H.264 needs even sizes."""
    for name, value in (("width", width), ("height", height)):
        if value <= 0 or value % 2:
            raise ValueError(f"{name} must be a positive even number of pixels, got {value}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if audio_rate is not None and audio_rate <= 0:
        raise ValueError(f"audio_rate must be positive or None, got {audio_rate}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be within 0..51 (x264), got {crf}")


def _temp_path(final: Path) -> Path:
    """A unique hidden name next to ``final``: same filesystem, so the rename is atomic.

    Not ``tempfile.mkstemp``: its 0600 mode would survive the rename; libavformat creates the
    file with the usual umask-derived mode instead.
    """
    return final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
