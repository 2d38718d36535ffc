"""Audio in: any file ffmpeg can read → 16 kHz mono float32, in bounded memory.

Every driver and model in Vivify consumes one audio format (see ``ARCHITECTURE.md``): 16 kHz mono
float32 in ``[-1, 1]``, cut into 40 ms video frames of ``SAMPLES_PER_FRAME`` samples. This module is
the one place that turns the outside world's audio (wav, mp3, ogg/opus, flac, m4a, a video's audio
track, raw PCM16 from a WebSocket) into that format.

Why it is built this way:

- Decoding is a generator of fixed-size chunks, never a whole-file array, so a one-hour render or a
  file on slow storage costs a few hundred kilobytes of memory, and downstream code is the same
  code that serves live streams (streaming equivalence).
- Resampling and format conversion go through ``av.AudioResampler`` (libswresample), which is
  band-limited and keeps phase across frames; it is flushed at the end so no tail samples are lost.
- Channels are averaged ourselves instead of letting libswresample downmix: its stereo→mono matrix
  adds each channel at −3 dB, so a mono recording stored as stereo would come out 3 dB louder than
  the same file stored as mono, and the baseline driver maps absolute levels to mouth opening.
- Failures raise one exception type, :class:`AudioDecodeError` (a ``ValueError``), with a message a
  user can act on: "not an audio file", "no audio stream", "corrupt audio: ...".
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

if TYPE_CHECKING:  # PyAV is imported where audio is decoded, so that the audio contract
    import av  # (the constants below) loads without it: GPU hosts run the engines bare.

SAMPLE_RATE = 16_000  # Hz: the one sample rate every engine consumes.
FPS = 25  # video frames per second.
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640 samples = 40 ms of audio per video frame.
DEFAULT_CHUNK_SAMPLES = SAMPLE_RATE  # 1 s: large enough to amortise Python overhead.
PCM16_SCALE = 32768.0  # int16 full scale: -32768 ↔ -1.0.
MAX_CORRUPT_PACKETS = 16  # isolated bad packets are skipped (as ffmpeg does); more is corruption.

# libswresample's planar float: one row per channel, which makes channel averaging a mean().
_DECODE_FORMAT = "fltp"

AudioSource = str | os.PathLike[str] | BinaryIO

__all__ = [
    "DEFAULT_CHUNK_SAMPLES",
    "FPS",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "AudioDecodeError",
    "AudioSource",
    "float_to_pcm16",
    "iter_audio",
    "load_audio",
    "pcm16_to_float",
    "probe_duration",
]


class AudioDecodeError(ValueError):
    """The input could not be decoded as audio; the message says why in user terms."""


def _name(source: AudioSource) -> str:
    """A short human name for error messages (file objects may have none)."""
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return str(getattr(source, "name", "<stream>"))


_OpenAudio = tuple["av.container.InputContainer", "av.AudioStream"]


@contextmanager
def _open_audio(source: AudioSource) -> Iterator[_OpenAudio]:
    """Open ``source`` and pick its first audio stream, translating failures to our errors.

    ``FileNotFoundError``/``PermissionError`` pass through unchanged: they are not decoding
    problems and callers (the CLI) already report them well.
    """
    import av

    try:
        container = av.open(source, mode="r")
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except av.error.FFmpegError as exc:
        raise AudioDecodeError(f"not an audio file: {_name(source)} ({exc.strerror})") from exc
    try:
        if not container.streams.audio:
            kinds = ", ".join(sorted({str(s.type) for s in container.streams})) or "nothing"
            raise AudioDecodeError(f"no audio stream in {_name(source)}: it holds {kinds}")
        stream = container.streams.audio[0]
        yield container, stream
    finally:
        container.close()


def _new_resampler() -> av.AudioResampler:
    """Planar float at 16 kHz; the channel layout is taken from the first frame it sees."""
    import av

    return av.AudioResampler(format=_DECODE_FORMAT, layout=None, rate=SAMPLE_RATE)


def _to_mono(frames: list[av.AudioFrame]) -> Iterator[np.ndarray]:
    """Average channels of resampled planar frames; clip, since lossy decoders overshoot."""
    for frame in frames:
        planes = frame.to_ndarray()  # (channels, samples) float32
        mono = planes.mean(axis=0, dtype=np.float32) if planes.shape[0] > 1 else planes[0]
        yield np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


def _frame_signature(frame: av.AudioFrame) -> tuple[str, str, int]:
    return frame.format.name, frame.layout.name, frame.sample_rate


def _decoded_mono(source: AudioSource) -> Iterator[np.ndarray]:
    """Yield 16 kHz mono float32 blocks of whatever size the decoder produces.

    A stream may change channel layout or rate mid-way (concatenated radio streams, some
    video files); the resampler is then flushed and rebuilt instead of failing.
    """
    import av

    with _open_audio(source) as (container, stream):
        resampler = _new_resampler()
        signature: tuple[str, str, int] | None = None
        corrupt = 0
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                corrupt += 1
                if corrupt > MAX_CORRUPT_PACKETS:
                    raise AudioDecodeError(
                        f"corrupt audio: {_name(source)}: {corrupt} undecodable packets "
                        f"(last: {exc.strerror})"
                    ) from exc
                continue
            for frame in frames:
                if signature is not None and _frame_signature(frame) != signature:
                    yield from _to_mono(resampler.resample(None))
                    resampler = _new_resampler()
                signature = _frame_signature(frame)
                yield from _to_mono(resampler.resample(frame))
        if signature is not None:
            yield from _to_mono(resampler.resample(None))
        elif corrupt or _declared_duration(container, stream):
            # e.g. a flac whose frames are all garbage: the demuxer finds nothing to decode
            raise AudioDecodeError(f"corrupt audio: {_name(source)}: no audio could be decoded")


def iter_audio(
    source: AudioSource, chunk_samples: int = DEFAULT_CHUNK_SAMPLES
) -> Iterator[np.ndarray]:
    """Decode ``source`` to 16 kHz mono float32 and yield chunks of exactly ``chunk_samples``.

    The last chunk is shorter (never empty). Memory stays bounded by one chunk plus one decoded
    frame, whatever the file's length. Raises :class:`AudioDecodeError` for non-audio or corrupt
    input; ``FileNotFoundError`` for a missing path.
    """
    if chunk_samples <= 0:
        raise ValueError(f"chunk_samples must be positive, got {chunk_samples}")
    pending: list[np.ndarray] = []
    pending_len = 0
    for block in _decoded_mono(source):
        if block.size == 0:
            continue
        pending.append(block)
        pending_len += block.size
        if pending_len < chunk_samples:
            continue
        joined = np.concatenate(pending)
        n_full = joined.size // chunk_samples
        for k in range(n_full):
            yield joined[k * chunk_samples : (k + 1) * chunk_samples].copy()
        rest = joined[n_full * chunk_samples :]
        pending = [rest] if rest.size else []
        pending_len = rest.size
    if pending_len:
        yield np.concatenate(pending)


def load_audio(source: AudioSource) -> np.ndarray:
    """The whole file as one 16 kHz mono float32 array: for short clips and tests only."""
    chunks = list(iter_audio(source))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks)


def probe_duration(source: AudioSource) -> float | None:
    """Duration in seconds from container/stream metadata, without decoding; None if unknown.

    It is an estimate for formats without an index (e.g. raw mp3 without a Xing header), good
    for progress bars and limits, not for frame counts: count decoded samples for those.
    """
    with _open_audio(source) as (container, stream):
        return _declared_duration(container, stream)


def _declared_duration(container: av.container.InputContainer, stream: av.AudioStream
                       ) -> float | None:
    """Seconds from the stream header, else from the container; None when neither says."""
    import av

    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM bytes → float32 in [-1, 1) (the WebSocket wire format)."""
    if len(data) % 2:
        raise ValueError(f"PCM16 data must have an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(PCM16_SCALE)


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """Float audio → little-endian PCM16 bytes, clipped; exact inverse of :func:`pcm16_to_float`."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples of shape (n,), got {x.shape}")
    scaled = np.rint(x * np.float32(PCM16_SCALE))
    return np.clip(scaled, -PCM16_SCALE, PCM16_SCALE - 1).astype("<i2").tobytes()
