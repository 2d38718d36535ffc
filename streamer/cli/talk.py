"""``vivify talk``: a small client of the public API — your voice (or a file) in, the avatar out.

It talks to the server exactly like any other client (``POST /v1/sessions``, WebRTC, the session
WebSocket, ``DELETE``), so it doubles as a living example of the API and as a smoke test of a
deployed server.

Why it is built this way:

- **Imports are lazy.** ``vivify.streamer.cli.main`` builds every subcommand's parser on each
start; aiortc,
  PyAV, httpx and websockets cost ~1 s to import, and PyAudio (PortAudio) is optional, so nothing
  heavy is imported until ``vivify talk`` actually runs. A missing PyAudio becomes a clear message.
- **Blocking audio I/O stays off the event loop.** The microphone is read on a thread
  (:class:`PcmCapture`); the speaker is fed by PortAudio's own callback thread from a bounded
  buffer (:class:`PlayoutBuffer`). The loop only ever does RTP, DTLS and bookkeeping.
- **Latency is bounded on both ends.** A lagging consumer drops the *oldest* microphone audio; the
  speaker buffer holds at most a quarter second and drops its oldest audio past that.
- **Recording follows the media clock, not the arrival clock.** The server stamps the video and
  audio of one slot with the same media time and both streams start at zero, so each received
  stream's pts relative to its own first frame is the shared timeline; :class:`Recorder` maps it
  onto a constant 25 fps / 16 kHz grid (repeating a frame or padding silence over gaps), which
  keeps the MP4 in sync however the packets were jittered on the way.
- **One cleanup path.** Every way a run ends (file finished, ``--seconds``, Ctrl-C, the server
  closing the session, an error) goes through :meth:`Talk.aclose`: close the WebSocket, ``DELETE``
  the session, close the peer connection, release the audio devices, finish the recording.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import av
    import httpx
    from aiortc import RTCPeerConnection
    from aiortc.contrib.media import MediaPlayer
    from aiortc.mediastreams import MediaStreamTrack

    from vivify.streamer.offline.video_writer import Mp4Writer

log = logging.getLogger(__name__)

DEFAULT_SERVER = "http://127.0.0.1:8080"
EXIT_OK = 0
EXIT_ERROR = 1  # the session failed or ended abnormally
EXIT_USAGE = 2  # bad arguments or input file (same code as the rest of the CLI)
EXIT_UNREACHABLE = 3  # no server answered at --server
EXIT_AUTH = 4  # the server refused the token
EXIT_INTERRUPTED = 130  # a second Ctrl-C aborted the cleanup

DEVICE_RATE = 48_000  # Hz asked of PortAudio first: Opus's native rate, no resampling in aiortc
FRAME_MS = 20  # one Opus packet of audio per microphone frame
MAX_MIC_BACKLOG = 10  # microphone frames (200 ms) kept when the sender lags; older ones go
SPEAKER_MAX_SECONDS = 0.25  # speaker buffer bound: latency beats completeness for a live call
WS_RATE = 16_000  # the WebSocket's PCM format: s16le mono 16 kHz
WS_CHUNK_SECONDS = 0.1  # one binary message
WS_LEAD_SECONDS = 0.2  # how far ahead of real time a file is pushed (covers network jitter)
TAIL_SECONDS = 1.0  # keep receiving this long after the audio ended (the answer lags)
FINISH_GRACE_SECONDS = 10.0  # a broadcast must report playback_finished this soon after the end
HTTP_TIMEOUT = 15.0
CLOSE_TIMEOUT = 5.0
STATUS_PERIOD = 1.0  # s between status lines on a terminal
STATUS_PERIOD_PIPE = 5.0  # s between status lines when stderr is a file or a pipe
RECORD_BACKLOG = 50  # video frames waiting for the encoder before new ones are dropped
RTP_WRAP = 1 << 32
MAX_PENDING_AUDIO = 60  # s of audio held for a recording whose video has not started
PYAUDIO_HINT = ("the microphone/speaker path needs PyAudio (PortAudio): install the Debian "
                "package portaudio19-dev and the Python package pyaudio (`make setup` does both), "
                "or pass --audio FILE to send a file instead")

Mode = Literal["mirror", "broadcast"]


class TalkError(Exception):
    """A failure the user can act on: printed as one line, mapped to an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class TalkOptions:
    server: str = DEFAULT_SERVER
    token: str | None = None
    avatar: str = "default"
    mode: Mode = "mirror"
    codec: Literal["vp8", "h264"] = "vp8"
    audio: Path | None = None
    save: Path | None = None
    seconds: float | None = None
    input_device: str | None = None
    output_device: str | None = None
    mute: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TalkOptions:
        server = args.server.rstrip("/")
        if not server.startswith(("http://", "https://")):
            raise TalkError(f"--server must be an http:// or https:// URL, got {args.server!r}",
                            EXIT_USAGE)
        if args.seconds is not None and args.seconds <= 0:
            raise TalkError("--seconds must be positive", EXIT_USAGE)
        audio = Path(args.audio) if args.audio else None
        if audio is not None and not audio.is_file():
            raise TalkError(f"--audio: no such file: {audio}", EXIT_USAGE)
        save = Path(args.save) if args.save else None
        if save is not None and not save.parent.is_dir():
            raise TalkError(f"--save: folder {save.parent} does not exist", EXIT_USAGE)
        return cls(server=server, token=args.token or None, avatar=args.avatar, mode=args.mode,
                   codec=args.codec, audio=audio, save=save, seconds=args.seconds,
                   input_device=args.input_device, output_device=args.output_device,
                   mute=args.mute)

    @property
    def uses_microphone(self) -> bool:
        return self.audio is None

    @property
    def uses_speaker(self) -> bool:
        """Live calls play the answer; a file run is headless unless a speaker is named."""
        return not self.mute and (self.audio is None or self.output_device is not None)


# ---------------------------------------------------------------------------------- pyaudio


def import_pyaudio() -> Any:
    """PyAudio, imported only when a device is needed, with an actionable error if absent."""
    try:
        import pyaudio
    except ImportError as exc:
        raise TalkError(PYAUDIO_HINT) from exc
    return pyaudio


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the C-level chatter of ALSA/JACK probing while PortAudio initialises.

    PortAudio's backends print pages of harmless warnings to fd 2 on machines without JACK or
    with odd ALSA configs; the user would read them as errors. ``-v`` keeps them.
    """
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def pick_device(devices: list[dict[str, Any]], spec: str | None, direction: str) -> int | None:
    """The device index for ``--input-device``/``--output-device``: an index or a name part.

    ``None`` means PortAudio's default. Names are matched case-insensitively among devices that
    have channels in ``direction`` ("input" or "output"), so "usb" finds "USB Audio: ... (hw:1,0)".
    """
    if spec is None:
        return None
    key = "maxInputChannels" if direction == "input" else "maxOutputChannels"
    usable = [d for d in devices if int(d.get(key, 0)) > 0]
    if spec.isdigit():
        index = int(spec)
        if any(int(d["index"]) == index for d in usable):
            return index
        raise TalkError(f"no {direction} device with index {index} (see --list-devices)",
                        EXIT_USAGE)
    matches = [d for d in usable if spec.lower() in str(d["name"]).lower()]
    if len(matches) == 1:
        return int(matches[0]["index"])
    if not matches:
        raise TalkError(f"no {direction} device named like {spec!r} (see --list-devices)",
                        EXIT_USAGE)
    names = ", ".join(f"{d['index']}: {d['name']}" for d in matches)
    raise TalkError(f"{spec!r} matches several {direction} devices ({names}); pass an index",
                    EXIT_USAGE)


def list_devices() -> int:
    """``--list-devices``: what PortAudio sees, so users can pick ``--input/--output-device``."""
    pyaudio = import_pyaudio()
    with _quiet_stderr():
        pa = pyaudio.PyAudio()
    try:
        devices = [pa.get_device_info_by_index(i) for i in range(pa.get_device_count())]
        if not devices:
            print("no audio devices found (PortAudio sees none)")
        for d in devices:
            print(f"{d['index']:>3}  in {d['maxInputChannels']:>2}  out {d['maxOutputChannels']:>2}"
                  f"  {int(d['defaultSampleRate']):>6} Hz  {d['name']}")
    finally:
        pa.terminate()
    return EXIT_OK


# ---------------------------------------------------------------------------------- microphone


class PcmInput(Protocol):
    """What :class:`PcmCapture` needs of a PyAudio input stream (tests pass a fake)."""

    def read(self, num_frames: int, exception_on_overflow: bool = True) -> bytes: ...


class PcmCapture:
    """Reads fixed 20 ms blocks of s16 PCM from a blocking source on a thread, for asyncio.

    Why a thread: PortAudio's blocking ``read`` would stall the event loop, and with it RTP,
    DTLS and the video decoder. Why pts from a sample counter: for a microphone the device clock
    is the truth; counting every sample read — including blocks dropped because the consumer
    lagged — keeps pts on the capture timeline, so the far end sees a gap rather than time
    squeezed together. Capture starts on the first :meth:`next_frame`, so no stale audio queues
    up while the call is being set up.
    """

    def __init__(self, source: PcmInput, rate: int, channels: int = 1,
                 frame_ms: int = FRAME_MS, max_backlog: int = MAX_MIC_BACKLOG) -> None:
        self.source = source
        self.rate = rate
        self.channels = channels
        self.samples_per_frame = rate * frame_ms // 1000
        self.dropped_frames = 0
        self._max_backlog = max_backlog
        self._queue: deque[tuple[bytes, int] | None] = deque()
        self._ready: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ended = False
        self.error: BaseException | None = None

    def start(self) -> None:
        """Start the reader thread (idempotent); must be called from the event loop."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="vivify-mic", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pts = 0
        try:
            while not self._stopping.is_set():
                data = self.source.read(self.samples_per_frame, exception_on_overflow=False)
                if self._stopping.is_set():
                    break
                self._post((data, pts))
                pts += len(data) // (2 * self.channels)
        except Exception as exc:  # the device went away: end the track, keep the reason
            self.error = exc
        finally:
            self._post(None)

    def _post(self, item: tuple[bytes, int] | None) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            loop.call_soon_threadsafe(self._deliver, item)

    def _deliver(self, item: tuple[bytes, int] | None) -> None:
        """On the loop: queue a block, dropping the oldest past the backlog bound."""
        if item is not None:
            while sum(1 for q in self._queue if q is not None) >= self._max_backlog:
                self._queue.popleft()
                self.dropped_frames += 1
        self._queue.append(item)
        if self._ready is not None:
            self._ready.set()

    async def read(self) -> tuple[bytes, int]:
        """The next block and its pts (in samples); ``EOFError`` once the source has ended."""
        self.start()
        assert self._ready is not None
        while not self._queue:
            if self._ended:
                raise EOFError
            self._ready.clear()
            await self._ready.wait()
        item = self._queue.popleft()
        if item is None:
            self._ended = True
            raise EOFError
        return item

    async def next_frame(self) -> av.AudioFrame:
        """The next block as an ``av.AudioFrame`` (s16, pts in 1/rate), as aiortc expects."""
        import av
        import numpy as np

        data, pts = await self.read()
        layout = "mono" if self.channels == 1 else "stereo"
        samples = np.frombuffer(data, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout=layout)
        frame.sample_rate = self.rate
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, self.rate)
        return frame

    def stop(self) -> None:
        """Ask the thread to finish after its current read (at most one frame, 20 ms)."""
        self._stopping.set()

    def join(self, timeout: float = 1.0) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)


@functools.cache
def _microphone_track_class() -> type[MediaStreamTrack]:
    """The aiortc track class, defined on first use so that importing this module stays cheap."""
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    class MicrophoneTrack(MediaStreamTrack):
        """An aiortc audio track whose frames come from a :class:`PcmCapture`."""

        kind = "audio"

        def __init__(self, capture: PcmCapture) -> None:
            super().__init__()
            self.capture = capture

        async def recv(self) -> av.AudioFrame:
            if self.readyState != "live":
                raise MediaStreamError
            try:
                return await self.capture.next_frame()
            except EOFError:
                self.stop()
                raise MediaStreamError from None

        def stop(self) -> None:
            super().stop()
            self.capture.stop()

    return MicrophoneTrack


def microphone_track(capture: PcmCapture) -> MediaStreamTrack:
    """A ``MediaStreamTrack`` (kind audio) that sends what ``capture`` reads."""
    return _microphone_track_class()(capture)  # type: ignore[call-arg]


# ---------------------------------------------------------------------------------- speaker


class PlayoutBuffer:
    """A bounded byte FIFO between the event loop (writer) and PortAudio's callback (reader).

    Why bounded in *time*: network bursts must not turn into a speaker that plays seconds
    behind; past ``max_seconds`` the oldest audio is dropped. An underrun plays silence rather
    than blocking the audio thread.
    """

    def __init__(self, bytes_per_second: int, max_seconds: float = SPEAKER_MAX_SECONDS,
                 align: int = 2) -> None:
        self.max_bytes = int(bytes_per_second * max_seconds) // align * align
        self.align = align
        self._data = bytearray()
        self._lock = threading.Lock()
        self.dropped_bytes = 0
        self.underruns = 0

    def write(self, data: bytes) -> None:
        with self._lock:
            self._data += data
            excess = len(self._data) - self.max_bytes
            if excess > 0:
                excess = -(-excess // self.align) * self.align
                del self._data[:excess]
                self.dropped_bytes += excess

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes: what is buffered, then zeros (silence for s16)."""
        with self._lock:
            out = bytes(self._data[:n])
            del self._data[:n]
        if len(out) < n:
            if out or self.underruns == 0:
                self.underruns += 1
            out += bytes(n - len(out))
        return out

    def __len__(self) -> int:
        return len(self._data)


class AudioDevices:
    """The PortAudio side of a live call: an input stream, an output stream, or both."""

    def __init__(self, input_device: str | None, output_device: str | None,
                 want_input: bool, want_output: bool) -> None:
        pyaudio = import_pyaudio()
        self._pyaudio = pyaudio
        with _quiet_stderr():
            self.pa = pyaudio.PyAudio()
        self.capture: PcmCapture | None = None
        self.playout: PlayoutBuffer | None = None
        self.output_rate = DEVICE_RATE
        self.output_channels = 1
        self._in_stream: Any = None
        self._out_stream: Any = None
        try:
            devices = [self.pa.get_device_info_by_index(i)
                       for i in range(self.pa.get_device_count())]
            if want_input:
                index = pick_device(devices, input_device, "input")
                rate = self._rate(index, "input")
                self._in_stream, channels = self._open(index, rate, input=True)
                self.capture = PcmCapture(self._in_stream, rate, channels)
            if want_output:
                index = pick_device(devices, output_device, "output")
                self.output_rate = self._rate(index, "output")
                self._out_stream, self.output_channels = self._open(
                    index, self.output_rate, output=True, stream_callback=self._callback)
                self.playout = PlayoutBuffer(self.output_rate * 2 * self.output_channels,
                                             align=2 * self.output_channels)
        except BaseException:
            self.close()
            raise

    def _rate(self, index: int | None, direction: str) -> int:
        """48 kHz when the device takes it, else the device's own default rate."""
        try:
            info = (self.pa.get_device_info_by_index(index) if index is not None else
                    self.pa.get_default_input_device_info() if direction == "input" else
                    self.pa.get_default_output_device_info())
        except OSError as exc:
            raise TalkError(f"no default {direction} device ({exc}); see --list-devices, or "
                            "pass --audio FILE" + (" / --mute" if direction == "output" else ""),
                            EXIT_ERROR) from exc
        kwargs = {f"{direction}_device": int(info["index"]), f"{direction}_channels": 1,
                  f"{direction}_format": self._pyaudio.paInt16}
        with contextlib.suppress(ValueError):
            if self.pa.is_format_supported(DEVICE_RATE, **kwargs):
                return DEVICE_RATE
        return int(info["defaultSampleRate"])

    def _open(self, index: int | None, rate: int, **kwargs: Any) -> tuple[Any, int]:
        """Open mono, else stereo: raw ``hw:`` ALSA devices often refuse one channel."""
        direction = "input" if kwargs.get("input") else "output"
        error: Exception | None = None
        for channels in (1, 2):
            if direction == "output":  # the callback may run before open() returns
                self.output_channels = channels
            try:
                stream = self.pa.open(format=self._pyaudio.paInt16, channels=channels, rate=rate,
                                      frames_per_buffer=rate * FRAME_MS // 1000,
                                      **{f"{direction}_device_index": index}, **kwargs)
                return stream, channels
            except (OSError, ValueError) as exc:
                error = exc
        raise TalkError(f"cannot open the {direction} device: {error}")

    def _callback(self, _in: bytes | None, frame_count: int, _info: Any, _status: int
                  ) -> tuple[bytes, int]:
        n = frame_count * 2 * self.output_channels
        playout = self.playout  # None for the first callbacks, while the stream is being set up
        return (playout.read(n) if playout else bytes(n)), self._pyaudio.paContinue

    def close(self) -> None:
        """Stop the reader thread before closing its stream; safe to call twice."""
        if self.capture is not None:
            self.capture.join()
        for stream in (self._in_stream, self._out_stream):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.stop_stream()
                    stream.close()
        self._in_stream = self._out_stream = None
        if self.pa is not None:
            self.pa.terminate()
            self.pa = None


# ---------------------------------------------------------------------------------- recording


class MediaTimeline:
    """Seconds since a stream's first frame, from its pts and time_base.

    The pts of received frames are RTP timestamps (random 32-bit origin), so they are unwrapped
    modulo 2³² before subtracting the first one.
    """

    def __init__(self) -> None:
        self._first: int | None = None
        self._last_raw = 0
        self._unwrapped = 0

    def seconds(self, pts: int, time_base: fractions.Fraction) -> float:
        if self._first is None:
            self._first = self._unwrapped = self._last_raw = pts
        else:
            step = (pts - self._last_raw) % RTP_WRAP
            if step >= RTP_WRAP // 2:
                step -= RTP_WRAP  # a small step back (reordering), not a wrap
            self._unwrapped += step
            self._last_raw = pts
        return float((self._unwrapped - self._first) * time_base)


class Recorder:
    """Received frames → an MP4 (H.264 + AAC, via
    :class:`~vivify.streamer.offline.video_writer.Mp4Writer`).

    Each stream's media time (pts since its own first frame) is mapped onto the writer's
    constant grids: frame ``k`` at ``k / fps``, audio sample ``n`` at ``n / audio_rate``. A video
    gap repeats the last frame, a late or duplicate frame is dropped; an audio gap (lost packets)
    is padded with silence and an overlap trimmed, within ``slack`` so jitter never adds clicks.
    Not thread-safe: :class:`Talk` calls it from one worker thread.
    """

    def __init__(self, path: Path, fps: int = 25, audio_rate: int = WS_RATE,
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


# ---------------------------------------------------------------------------------- the call


@dataclass
class ReceiveStats:
    """What the status line and the final summary report; fed from the receiving tasks."""

    started: float = field(default_factory=time.monotonic)
    video_times: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    video_frames: int = 0
    size: tuple[int, int] | None = None
    audio_seconds: float = 0.0
    rtt_ms: float | None = None

    def on_video(self, width: int, height: int) -> None:
        self.video_frames += 1
        self.video_times.append(time.monotonic())
        self.size = (width, height)

    def fps(self, window: float | None = None) -> float | None:
        """Frames per second over the last ``window`` seconds, or the steady rate when ``None``.

        The steady rate leaves out the first second: frames queued while ICE and DTLS were
        being set up arrive in one burst and would overstate it.
        """
        times = list(self.video_times)
        if window is not None:
            times = [t for t in times if t >= time.monotonic() - window]
        elif times and times[-1] - times[0] > 2.0:
            times = [t for t in times if t >= times[0] + 1.0]
        if len(times) < 2 or times[-1] <= times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])

    def line(self) -> str:
        fps = self.fps(2.0)
        size = f"{self.size[0]}×{self.size[1]}" if self.size else "–"
        rtt = f"{self.rtt_ms:.0f} ms" if self.rtt_ms is not None else "–"
        return (f"{time.monotonic() - self.started:6.1f} s │ video "
                f"{fps if fps is not None else 0:5.1f} fps {size} │ audio "
                f"{self.audio_seconds:6.1f} s │ rtt {rtt}")


@dataclass
class TalkReport:
    session: str | None = None
    reason: str = ""
    exit_code: int = EXIT_OK
    video_frames: int = 0
    fps: float | None = None
    size: tuple[int, int] | None = None
    audio_seconds: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    saved: Path | None = None
    saved_frames: int = 0

    def summary(self) -> str:
        size = f"{self.size[0]}×{self.size[1]}" if self.size else "no video"
        fps = f"{self.fps:.1f} fps" if self.fps else "– fps"
        parts = [f"session {self.session or '–'} ended: {self.reason}",
                 f"received {self.video_frames} video frames ({fps}, {size}) and "
                 f"{self.audio_seconds:.1f} s of audio"]
        finished = [e for e in self.events if e.get("type") == "playback_finished"]
        if finished:
            parts.append(f"playback_finished at {finished[-1].get('position_ms')} ms"
                         f"{' (interrupted)' if finished[-1].get('interrupted') else ''}")
        if self.saved:
            parts.append(f"saved {self.saved} ({self.saved_frames} frames)")
        return "; ".join(parts)


def _api_error(response: httpx.Response, what: str) -> TalkError:
    """Turn an error response into one readable line (the API's ``{"error": {...}}`` shape)."""
    try:
        err = response.json()["error"]
        code, message = err["code"], err["message"]
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", response.text[:200] or response.reason_phrase
    if response.status_code == 401:
        return TalkError(f"{what}: the server refused the token ({message}); pass --token or "
                         "set VIVIFY_TOKEN", EXIT_AUTH)
    if response.status_code == 503:
        retry = response.headers.get("retry-after")
        return TalkError(f"{what}: the server is full ({message})"
                         + (f"; retry in {retry} s" if retry else ""))
    return TalkError(f"{what}: HTTP {response.status_code} {code}: {message}")


class Talk:
    """One call: connect, stream, stop on the first reason, clean up through one path."""

    def __init__(self, opts: TalkOptions, status: Callable[[str], None] | None = None) -> None:
        self.opts = opts
        self.report = TalkReport()
        self.stats = ReceiveStats()
        self._status = status or _status_printer()
        self._stop = asyncio.Event()
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._http: httpx.AsyncClient | None = None
        self._pc: RTCPeerConnection | None = None
        self._ws: Any = None
        self._player: MediaPlayer | None = None
        self._devices: AudioDevices | None = None
        self._recorder: Recorder | None = None
        self._rec_pool: ThreadPoolExecutor | None = None
        self._rec_slots = threading.BoundedSemaphore(RECORD_BACKLOG)
        self._rec_dropped = 0
        self._rec_failed: BaseException | None = None
        self._speaker_resampler: Any = None
        self._file_done = False

    # ------------------------------------------------------------------ control
    def stop(self, reason: str, exit_code: int = EXIT_OK) -> None:
        """End the call; the first reason wins."""
        if not self._stop.is_set():
            self.report.reason, self.report.exit_code = reason, exit_code
            self._stop.set()

    def _later(self, delay: float, reason: str) -> None:
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(delay, self.stop, reason))

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(self._guard(coro, name), name=f"talk-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, coro: Any, name: str) -> None:
        """A background task that fails ends the call with its error instead of dying quietly."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except TalkError as exc:
            self.stop(str(exc), exc.exit_code)
        except Exception as exc:
            log.debug("%s failed", name, exc_info=True)
            self.stop(f"{name} failed: {exc}", EXIT_ERROR)

    # ------------------------------------------------------------------ run
    async def run(self) -> TalkReport:
        """Run the call until a stop reason; always clean up. Setup errors raise TalkError."""
        try:
            await self._start()
            await self._stop.wait()
        finally:
            await self.aclose()
        return self.report

    async def _start(self) -> None:
        import httpx
        from aiortc import RTCSessionDescription

        from vivify.streamer.rtc.peer import ice_servers_from_env, new_peer_connection

        opts = self.opts
        if opts.uses_microphone or opts.uses_speaker:
            self._devices = AudioDevices(opts.input_device, opts.output_device,
                                         want_input=opts.uses_microphone,
                                         want_output=opts.uses_speaker)
        if opts.save is not None:
            self._recorder = Recorder(opts.save)
            self._rec_pool = ThreadPoolExecutor(1, thread_name_prefix="vivify-record")

        headers = {"authorization": f"Bearer {opts.token}"} if opts.token else {}
        self._http = httpx.AsyncClient(base_url=opts.server, headers=headers,
                                       timeout=HTTP_TIMEOUT)
        pc = self._pc = new_peer_connection(ice_servers_from_env())
        if opts.mode == "mirror":
            pc.addTrack(self._outgoing_audio())
        else:
            pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._spawn(self._receive(track), f"receive-{track.kind}")

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and not self._closing:
                self.stop(f"the connection {pc.connectionState}", EXIT_ERROR)

        await pc.setLocalDescription(await pc.createOffer())
        body = {"avatar": opts.avatar, "mode": opts.mode,
                "video": {"fps": 25, "codec": opts.codec},
                "offer": {"type": "offer", "sdp": pc.localDescription.sdp}}
        try:
            response = await self._http.post("/v1/sessions", json=body)
        except httpx.TransportError as exc:
            raise TalkError(f"cannot reach the Vivify server at {opts.server} "
                            f"({type(exc).__name__}: {exc or 'no answer'}); is `vivify serve` "
                            "running there?", EXIT_UNREACHABLE) from exc
        if response.status_code != 201:
            raise _api_error(response, "starting the session")
        data = response.json()
        self.report.session = data["id"]
        await pc.setRemoteDescription(RTCSessionDescription(**data["answer"]))

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._on_signal, sig)
        if opts.mode == "broadcast":
            await self._open_ws()
        if opts.seconds is not None:
            self._later(opts.seconds, f"--seconds {opts.seconds:g} reached")
        self._spawn(self._report_status(), "status")

    def _on_signal(self, sig: int) -> None:
        if self._stop.is_set():  # a second Ctrl-C: stop waiting for the cleanup
            raise KeyboardInterrupt
        self.stop("interrupted" if sig == signal.SIGINT else "terminated")

    def _outgoing_audio(self) -> MediaStreamTrack:
        """Mirror mode's microphone: the file (real-time paced by aiortc) or the device."""
        if self.opts.audio is not None:
            from aiortc.contrib.media import MediaPlayer

            try:
                self._player = MediaPlayer(str(self.opts.audio))
            except Exception as exc:
                raise TalkError(f"--audio: cannot read {self.opts.audio}: {exc}",
                                EXIT_USAGE) from exc
            track = self._player.audio
            if track is None:
                raise TalkError(f"--audio: {self.opts.audio} has no audio stream", EXIT_USAGE)

            @track.on("ended")
            def on_ended() -> None:
                self._file_done = True
                self._later(TAIL_SECONDS, "the audio file finished")

            return track
        assert self._devices is not None and self._devices.capture is not None
        return microphone_track(self._devices.capture)

    # ------------------------------------------------------------------ receiving
    async def _receive(self, track: MediaStreamTrack) -> None:
        import av
        from aiortc.mediastreams import MediaStreamError

        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, av.VideoFrame):
                self.stats.on_video(frame.width, frame.height)
                self._record("video", frame)
            elif isinstance(frame, av.AudioFrame):
                self.stats.audio_seconds += frame.samples / frame.sample_rate
                self._play(frame)
                self._record("audio", frame)

    def _play(self, frame: av.AudioFrame) -> None:
        devices = self._devices
        if devices is None or devices.playout is None:
            return
        import av

        if self._speaker_resampler is None:
            self._speaker_resampler = av.AudioResampler(
                format="s16", layout="mono" if devices.output_channels == 1 else "stereo",
                rate=devices.output_rate)
        for out in self._speaker_resampler.resample(frame):
            devices.playout.write(bytes(out.planes[0])[:out.samples * 2 * devices.output_channels])

    def _record(self, kind: str, frame: Any) -> None:
        recorder, pool = self._recorder, self._rec_pool
        if recorder is None or pool is None or self._rec_failed is not None:
            return
        if kind == "video" and not self._rec_slots.acquire(blocking=False):
            self._rec_dropped += 1  # the encoder is behind: drop video, never the loop
            return

        def write() -> None:
            try:
                if kind == "video":
                    recorder.add_video(frame)
                else:
                    recorder.add_audio(frame)
            except Exception as exc:
                self._rec_failed = exc
            finally:
                if kind == "video":
                    self._rec_slots.release()

        pool.submit(write)

    async def _report_status(self) -> None:
        period = STATUS_PERIOD if _is_tty() else STATUS_PERIOD_PIPE
        while True:
            await asyncio.sleep(period)
            self.stats.rtt_ms = await self._rtt_ms()
            self._status(self.stats.line())

    async def _rtt_ms(self) -> float | None:
        """RTT from RTCP receiver reports on what we send (mirror mode); None otherwise."""
        if self._pc is None:
            return None
        with contextlib.suppress(Exception):
            for s in (await self._pc.getStats()).values():
                if getattr(s, "type", "") == "remote-inbound-rtp":
                    rtt = getattr(s, "roundTripTime", None)
                    if rtt is not None:
                        return float(rtt) * 1000
        return None

    # ------------------------------------------------------------------ broadcast
    async def _open_ws(self) -> None:
        import websockets

        assert self.report.session is not None
        url = self.opts.server.replace("http", "ws", 1) + f"/v1/sessions/{self.report.session}/ws"
        headers = {"authorization": f"Bearer {self.opts.token}"} if self.opts.token else {}
        try:
            self._ws = await websockets.connect(url, additional_headers=headers,
                                                open_timeout=HTTP_TIMEOUT)
        except (OSError, websockets.exceptions.WebSocketException) as exc:
            raise TalkError(f"cannot open the session WebSocket {url}: {exc}") from exc
        self._spawn(self._listen(), "websocket")
        if self.opts.audio is not None:
            self._spawn(self._push_file(self.opts.audio), "send-file")
        else:
            self._spawn(self._push_microphone(), "send-microphone")

    async def _listen(self) -> None:
        import websockets

        try:
            async for message in self._ws:
                if not isinstance(message, str):
                    continue
                event = json.loads(message)
                self.report.events.append(event)
                kind = event.get("type")
                if kind == "playback_finished":
                    self._status(f"playback finished at {event.get('position_ms')} ms")
                    if self._file_done:
                        self._later(TAIL_SECONDS, "playback finished")
                elif kind == "playback_started":
                    self._status("playback started")
                elif kind == "error" and event.get("code") == "session_closed":
                    self.stop(f"the server closed the session: {event.get('message')}",
                              EXIT_ERROR)
                elif kind == "error":
                    self._status(f"server error {event.get('code')}: {event.get('message')}")
        except websockets.exceptions.ConnectionClosedError:
            pass
        if not self._closing:
            code, why = getattr(self._ws, "close_code", None), getattr(self._ws, "close_reason", "")
            self.stop(f"the server closed the WebSocket (code {code}{': ' + why if why else ''})",
                      EXIT_ERROR)

    async def _push_file(self, path: Path) -> None:
        """Send a file as PCM s16le 16 kHz in 100 ms messages, paced to real time."""
        from vivify.engines.audio.audio_io import AudioDecodeError, float_to_pcm16, iter_audio

        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0.0
        try:
            for chunk in iter_audio(path, chunk_samples=int(WS_RATE * WS_CHUNK_SECONDS)):
                delay = start + sent - WS_LEAD_SECONDS - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._ws.send(float_to_pcm16(chunk))
                sent += chunk.size / WS_RATE
        except AudioDecodeError as exc:
            raise TalkError(f"--audio: {exc}", EXIT_USAGE) from exc
        await self._ws.send(json.dumps({"type": "segment_end"}))
        self._file_done = True
        if any(e.get("type") == "playback_finished" for e in self.report.events):
            self._later(TAIL_SECONDS, "playback finished")
        remaining = start + sent - loop.time()
        await asyncio.sleep(max(0.0, remaining) + FINISH_GRACE_SECONDS)
        self.stop("the server never reported playback_finished", EXIT_ERROR)

    async def _push_microphone(self) -> None:
        """Broadcast from the microphone: the device's frames, as 16 kHz PCM over the socket."""
        import av

        assert self._devices is not None and self._devices.capture is not None
        capture = self._devices.capture
        resampler = av.AudioResampler(format="s16", layout="mono", rate=WS_RATE)
        while True:
            try:
                frame = await capture.next_frame()
            except EOFError:
                raise TalkError(f"the microphone stopped: {capture.error}") from None
            for out in resampler.resample(frame):
                await self._ws.send(bytes(out.planes[0])[:out.samples * 2])

    # ------------------------------------------------------------------ cleanup
    async def aclose(self) -> None:
        """The one cleanup path. Idempotent; every step runs even if an earlier one failed."""
        if self._closing:
            return
        self._closing = True
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        for timer in self._timers:
            timer.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), CLOSE_TIMEOUT)
        if self._http is not None:
            if self.report.session is not None:
                try:
                    r = await self._http.delete(f"/v1/sessions/{self.report.session}",
                                                timeout=CLOSE_TIMEOUT)
                    if r.status_code not in (204, 404):  # 404: the server already closed it
                        self._status(f"warning: DELETE session: HTTP {r.status_code}")
                except Exception as exc:
                    self._status(f"warning: could not delete the session: {exc}")
            await self._http.aclose()
        if self._pc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pc.close(), CLOSE_TIMEOUT)
        if self._player is not None and self._player.audio is not None:
            self._player.audio.stop()
        if self._devices is not None:
            await asyncio.to_thread(self._devices.close)
        await self._finish_recording()
        self.report.video_frames = self.stats.video_frames
        self.report.fps = self.stats.fps()
        self.report.size = self.stats.size
        self.report.audio_seconds = self.stats.audio_seconds

    async def _finish_recording(self) -> None:
        recorder, pool = self._recorder, self._rec_pool
        if recorder is None or pool is None:
            return
        await asyncio.to_thread(pool.shutdown, wait=True)
        if self._rec_failed is not None:
            recorder.abort()
            self._status(f"warning: recording failed, nothing saved: {self._rec_failed}")
            return
        if self._rec_dropped:
            self._status(f"warning: the encoder fell behind; {self._rec_dropped} received "
                         "frames were not recorded (their neighbours were repeated)")
        if await asyncio.to_thread(recorder.close):
            self.report.saved, self.report.saved_frames = recorder.path, recorder.frames
        else:
            self._status("warning: no video arrived; nothing saved")


def _is_tty() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _status_printer() -> Callable[[str], None]:
    """Status lines go to stderr: one line rewritten in place on a terminal, else appended."""
    tty = _is_tty()

    def show(line: str) -> None:
        if tty:
            print(f"\r\x1b[2K{line}", end="" if "│" in line else "\n", file=sys.stderr,
                  flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    return show


async def talk(opts: TalkOptions, status: Callable[[str], None] | None = None) -> TalkReport:
    """Run one call with ``opts``; raises :class:`TalkError` when it cannot start."""
    return await Talk(opts, status).run()


def run_talk(args: argparse.Namespace) -> int:
    """The ``vivify talk`` entry point: an exit code, errors as one line on stderr."""
    try:
        if args.list_devices:
            return list_devices()
        opts = TalkOptions.from_args(args)
        report = asyncio.run(talk(opts))
    except TalkError as exc:
        print(f"\nvivify talk: {exc}" if _is_tty() else f"vivify talk: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vivify talk: aborted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if _is_tty():
        print(file=sys.stderr)
    print(f"vivify talk: {report.summary()}")
    return report.exit_code


def add_talk_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``vivify talk`` on the CLI's subparsers (``func`` returns an exit code)."""
    p = subparsers.add_parser(
        "talk", help="talk to a running server: microphone (or a file) in, the avatar out",
        description="Talk to a Vivify server through its public API. Without --audio the "
                    "microphone is sent and the answer plays on the speaker (use headphones "
                    "in mirror mode, or --mute: the answer is your own voice). With --audio "
                    "FILE the file is sent instead and nothing is played.")
    p.add_argument("--server", default=os.environ.get("VIVIFY_URL", DEFAULT_SERVER),
                   help=f"server URL (VIVIFY_URL, {DEFAULT_SERVER})")
    p.add_argument("--token", default=os.environ.get("VIVIFY_TOKEN"),
                   help="bearer token (VIVIFY_TOKEN)")
    p.add_argument("--avatar", default="default", help="avatar id (default)")
    p.add_argument("--mode", choices=("mirror", "broadcast"), default="mirror",
                   help="mirror: the WebRTC microphone drives the avatar; broadcast: the audio "
                        "goes over the session WebSocket (mirror)")
    p.add_argument("--codec", choices=("vp8", "h264"), default="vp8", help="video codec (vp8)")
    p.add_argument("--audio", metavar="FILE", default=None,
                   help="send this audio file instead of the microphone; stop when it ends")
    p.add_argument("--save", metavar="OUT.mp4", default=None,
                   help="record the received video and audio (H.264 + AAC)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--input-device", metavar="I", default=None,
                   help="microphone: index or part of the name (see --list-devices)")
    p.add_argument("--output-device", metavar="O", default=None,
                   help="speaker: index or part of the name (see --list-devices)")
    p.add_argument("--mute", action="store_true", help="do not play the answer")
    p.add_argument("--list-devices", action="store_true",
                   help="list the audio devices PortAudio sees, then exit")
    p.set_defaults(func=run_talk)
    return p
