"""The microphone: blocking PortAudio reads on a thread, as an aiortc audio track."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import functools
import threading
from collections import deque
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import av
    from aiortc.mediastreams import MediaStreamTrack

FRAME_MS = 20  # one Opus packet of audio per microphone frame
MAX_MIC_BACKLOG = 10  # microphone frames (200 ms) kept when the sender lags; older ones go


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
    from aiortc.mediastreams import MediaStreamTrack

    from vivify.streamer.rtc.tracks import next_or_end

    class MicrophoneTrack(MediaStreamTrack):
        """An aiortc audio track whose frames come from a :class:`PcmCapture`."""

        kind = "audio"

        def __init__(self, capture: PcmCapture) -> None:
            super().__init__()
            self.capture = capture

        async def recv(self) -> av.AudioFrame:
            return await next_or_end(self, self._frame_or_end)

        async def _frame_or_end(self) -> av.AudioFrame | None:
            try:
                return await self.capture.next_frame()
            except EOFError:  # the capture stopped: the track ends
                return None

        def stop(self) -> None:
            super().stop()
            self.capture.stop()

    return MicrophoneTrack


def microphone_track(capture: PcmCapture) -> MediaStreamTrack:
    """A ``MediaStreamTrack`` (kind audio) that sends what ``capture`` reads."""
    return _microphone_track_class()(capture)  # type: ignore[call-arg]

