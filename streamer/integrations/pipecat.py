"""Vivify as a Pipecat video service: TTS audio in, the avatar's frames and that audio out, in step.

Where it goes: ``... → tts → VivifyVideoService() → transport.output()``. It consumes
``TTSAudioRawFrame`` (any rate, any channel count), ends the utterance on ``TTSStoppedFrame`` and
drops what is queued on ``InterruptionFrame``; every 40 ms it pushes an ``OutputImageRawFrame``
(512² RGB) and a ``SpeechOutputAudioRawFrame`` with exactly the audio that belongs to that frame.

Why the TTS audio is not passed on: the TTS runs faster than real time and the transport plays
its audio as it comes, while the face needs generating first. Passed on as well, the audio would
lead the lips by the engine's latency and drift with every stall. Here both come from the one
source, the session's pairs (vivify.streamer.media.pairs: a frame carries its own audio),
so downstream they
can only be late together. ``SpeechOutputAudioRawFrame`` is Pipecat's type for such a
continuous stream with silences in it: the output transport tells the bot speaking from the
silence itself. Each 40 ms block is resampled to the transport's rate here, one whole output
chunk per frame, so the transport never pads a partial chunk into the stream (which would
shift the audio behind the video for good).

``TTSStoppedFrame`` is held until the utterance has been played (``playback_finished``), so
downstream sees it after the audio it closes, as it would without an avatar. Each utterance is
padded to whole frames: its tail plays with it, not at the start of the next one, and
``position_ms`` counts whole frames.

Backends, one interface: the engines of this process (``LocalAvatars``: a new one, started in
``setup``, or one passed in and shared, e.g. a running server's), or a ``vivify serve`` over its
API (``url=``, streamer/integrations/remote.py). Transport settings that keep every frame:
``TransportParams(video_out_enabled=True, video_out_is_live=True, video_out_width=512,
video_out_height=512, video_out_framerate=25, audio_out_enabled=True)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

try:
    import soxr
    from pipecat.frames.frames import (
        CancelFrame,
        EndFrame,
        Frame,
        InterruptionFrame,
        OutputImageRawFrame,
        SpeechOutputAudioRawFrame,
        StartFrame,
        TTSAudioRawFrame,
        TTSStoppedFrame,
    )
    from pipecat.processors.frame_processor import (
        FrameDirection,
        FrameProcessor,
        FrameProcessorSetup,
    )
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"vivify.streamer.integrations.pipecat needs Pipecat ({exc.name} is missing): "
        "pip install '.[pipecat]'") from exc

from vivify.engines.audio.audio_io import SAMPLE_RATE, SAMPLES_PER_FRAME
from vivify.streamer.integrations.avatar_session import to_mono_float
from vivify.streamer.media.pairs import FPS, AVPair

if TYPE_CHECKING:
    from vivify.streamer.server.config import ServerConfig

log = logging.getLogger(__name__)

END_GRACE_S = 1.0  # on EndFrame, wait for queued speech to play, plus this much
EVENTS = ("on_playback_started", "on_playback_finished", "on_avatar_error")


class Avatar(Protocol):
    """What the service needs of a session (``AvatarSession`` and ``RemoteAvatarSession``)."""

    def push_audio(self, pcm: np.ndarray | bytes, sample_rate: int = ...,
                   channels: int = ...) -> None: ...

    def segment_end(self) -> None: ...

    def interrupt(self) -> None: ...

    def pairs(self) -> AsyncIterator[AVPair]: ...

    def events(self) -> AsyncIterator[dict[str, Any]]: ...

    async def aclose(self, reason: str = ...) -> None: ...


class Avatars(Protocol):
    """A source of sessions (``LocalAvatars`` and ``RemoteAvatars``)."""

    async def open(self, avatar: str = ...) -> Any: ...

    async def aclose(self) -> None: ...


class SpeechIn:
    """One utterance of TTS audio → 16 kHz mono float, padded to whole 40 ms frames at its end.

    A streaming resampler (soxr) per utterance: chunks join without clicks, and ``finish``
    flushes the filter's tail, so every sample of the utterance is played with it.
    """

    def __init__(self) -> None:
        self._stream: Any = None
        self._rate = SAMPLE_RATE
        self.samples = 0  # 16 kHz samples produced in this utterance

    def push(self, pcm: bytes, sample_rate: int, channels: int) -> np.ndarray:
        x = to_mono_float(pcm, channels)
        if sample_rate != self._rate:
            tail = self._flush()
            self._rate = sample_rate
            if sample_rate != SAMPLE_RATE:
                self._stream = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32")
            x = np.concatenate([tail, x]) if sample_rate == SAMPLE_RATE else np.concatenate(
                [tail, self._stream.resample_chunk(x)])
        elif self._stream is not None:
            x = self._stream.resample_chunk(x)
        self.samples += x.size
        return np.asarray(x, np.float32)

    def _flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, np.float32)
        tail = np.asarray(self._stream.resample_chunk(np.zeros(0, np.float32), last=True),
                          np.float32)
        self._stream = None
        return tail

    def finish(self) -> np.ndarray:
        """The rest of the utterance: the filter's tail and silence up to a whole frame."""
        tail = self._flush()
        self._rate = SAMPLE_RATE
        pad = -(self.samples + tail.size) % SAMPLES_PER_FRAME
        self.samples = 0
        return np.concatenate([tail, np.zeros(pad, np.float32)])

    def reset(self) -> None:
        self._stream, self._rate, self.samples = None, SAMPLE_RATE, 0


class FrameAudio:
    """40 ms blocks at 16 kHz → exactly ``rate / 25`` samples each at the output rate.

    The resampler's delay (a few ms, constant) is taken up front as silence, so every block
    out is one whole transport chunk and the A/V step never moves.
    """

    def __init__(self, rate: int) -> None:
        if rate % FPS:
            raise ValueError(f"output rate {rate} Hz is not a whole number of samples per frame")
        self.rate, self.block = rate, rate // FPS
        self._stream = (None if rate == SAMPLE_RATE else
                        soxr.ResampleStream(SAMPLE_RATE, rate, 1, dtype="int16"))
        self._fifo = np.zeros(0, np.int16)

    def __call__(self, audio: np.ndarray) -> bytes:
        if self._stream is None:
            return np.ascontiguousarray(audio, dtype="<i2").tobytes()
        fifo = np.concatenate([self._fifo, self._stream.resample_chunk(audio)])
        if fifo.size < self.block:
            fifo = np.concatenate([np.zeros(self.block - fifo.size, np.int16), fifo])
        out, self._fifo = fifo[:self.block], fifo[self.block:]
        return out.astype("<i2").tobytes()


class VivifyVideoService(FrameProcessor):
    """A talking-head avatar between the TTS and the output transport (module docstring).

    ``avatars``: a ``LocalAvatars`` or ``RemoteAvatars`` to open the session from (shared,
    not closed here). Without it: ``url`` (and ``token``) for a ``vivify serve``, else the
    engines of this process, started in ``setup`` with ``config`` and ``home``.
    ``audio_out_sample_rate``: the rate of the audio pushed (default: the pipeline's output
    rate; set it to the transport's if that overrides it). ``sync_with_audio``: mark images to
    be shown only after the audio before them (for transports with ``video_out_is_live=False``).

    Events (``@service.event_handler(name)``): ``on_playback_started(service, event)``,
    ``on_playback_finished(service, event)`` (``position_ms``, ``interrupted``),
    ``on_avatar_error(service, event)``. Every pushed frame carries
    ``metadata["vivify"] = {"slot", "live"}``.
    """

    def __init__(self, *, avatars: Avatars | None = None, url: str | None = None,
                 token: str | None = None, avatar: str = "default",
                 audio_out_sample_rate: int | None = None, sync_with_audio: bool = False,
                 config: ServerConfig | None = None, home: Path | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._avatars: Any = avatars
        self._owned = avatars is None
        self._url, self._token, self._config, self._home = url, token, config, home
        self._avatar_name = avatar
        self._out_rate = audio_out_sample_rate
        self._sync_with_audio = sync_with_audio
        self._session: Avatar | None = None
        self._audio_out: FrameAudio | None = None
        self._speech = SpeechIn()
        self._tasks: list[asyncio.Task[None]] = []
        self._held_stops: deque[TTSStoppedFrame] = deque()
        self._release_stops = False
        self._utterance_audio = False  # audio pushed since the last TTSStoppedFrame
        self._queued_until = 0.0  # monotonic time the speech pushed so far has played
        self._idle = asyncio.Event()
        self._idle.set()
        for name in EVENTS:
            self._register_event_handler(name)

    @property
    def session(self) -> Avatar | None:
        """The open avatar session (between StartFrame and EndFrame/CancelFrame)."""
        return self._session

    # ------------------------------------------------------------------ lifecycle
    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        """Slow start-up belongs here (Pipecat sets processors up concurrently): the engines,
        when this service owns them."""
        await super().setup(setup)
        if self._out_rate is None:
            self._out_rate = setup.audio_out_sample_rate
        if self._avatars is None:
            self._avatars = await self._new_backend()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._close("pipeline cleaned up")
        if self._owned and self._avatars is not None:
            avatars, self._avatars = self._avatars, None
            await avatars.aclose()

    async def _open(self) -> None:
        """Open the session (on StartFrame); a failure is reported upstream and the TTS audio
        then passes through untouched, so the bot still speaks without a face."""
        if self._avatars is None:  # setup() did not run or was cut short: start here
            self._avatars = await self._new_backend()
        try:
            self._session = await self._avatars.open(self._avatar_name)
        except Exception as exc:
            await self.push_error(error_msg=f"Vivify session could not start: {exc}",
                                  exception=exc)
            return
        self._audio_out = FrameAudio(self._out_rate or SAMPLE_RATE)

    async def _new_backend(self) -> Avatars:
        if self._url is not None:
            from vivify.streamer.integrations.remote import RemoteAvatars

            return RemoteAvatars(self._url, self._token)
        from vivify.streamer.integrations.avatar_session import LocalAvatars

        return await LocalAvatars.start(self._config, self._home)

    def _start_tasks(self) -> None:
        session = self._session
        if session is not None:
            self._tasks = [self.create_task(self._pump(session), "vivify-pairs"),
                           self.create_task(self._watch(session), "vivify-events")]

    async def _close(self, reason: str) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await self.cancel_task(task)
        session, self._session = self._session, None
        if session is not None:
            await session.aclose(reason)
        self._speech.reset()  # the resamplers go with the session
        self._audio_out = None

    async def _drain(self) -> None:
        """EndFrame: let the speech already queued finish playing (bounded)."""
        if self._session is None:
            return
        if self._utterance_audio:  # the TTS never closed its utterance: close it now
            self._end_utterance()
        timeout = max(0.0, self._queued_until - time.monotonic()) + END_GRACE_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    # ------------------------------------------------------------------ frames in
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self._open()  # before StartFrame goes on: nothing may be pushed ahead of it
            await self.push_frame(frame, direction)
            self._start_tasks()
        elif isinstance(frame, EndFrame):
            await self._drain()
            await self._close("pipeline ended")
            while self._held_stops:  # speech that did not finish in time: close it anyway
                await self.push_frame(self._held_stops.popleft())
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._close("pipeline cancelled")
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            self._interrupt()
            await self.push_frame(frame, direction)
        elif (isinstance(frame, TTSAudioRawFrame) and direction == FrameDirection.DOWNSTREAM
              and self._session is not None):
            self._speak(frame)
        elif (isinstance(frame, TTSStoppedFrame) and direction == FrameDirection.DOWNSTREAM
              and self._utterance_audio):
            self._held_stops.append(frame)  # goes on once the utterance has played
            self._end_utterance()
        else:
            await self.push_frame(frame, direction)

    def _speak(self, frame: TTSAudioRawFrame) -> None:
        assert self._session is not None
        x = self._speech.push(frame.audio, frame.sample_rate, frame.num_channels)
        self._push(x)
        self._utterance_audio = True

    def _push(self, x: np.ndarray) -> None:
        assert self._session is not None
        if not x.size:
            return
        try:
            self._session.push_audio(x, SAMPLE_RATE)
        except OverflowError as exc:
            log.warning("Vivify: %s", exc)
            return
        now = time.monotonic()
        self._queued_until = max(self._queued_until, now) + x.size / SAMPLE_RATE
        self._idle.clear()

    def _end_utterance(self) -> None:
        assert self._session is not None
        self._push(self._speech.finish())
        self._session.segment_end()
        self._utterance_audio = False

    def _interrupt(self) -> None:
        """The framework's interrupt: forget the utterance, drop the session's queue (the face
        is idle again within a frame or two); the held stops belong to what was cut off."""
        self._speech.reset()
        self._held_stops.clear()
        self._utterance_audio = False
        self._queued_until = time.monotonic()
        if self._session is not None:
            self._session.interrupt()

    # ------------------------------------------------------------------ frames out
    async def _pump(self, session: Avatar) -> None:
        async for pair in session.pairs():
            meta = {"slot": pair.slot, "live": pair.live}
            height, width = pair.image.shape[:2]
            image = OutputImageRawFrame(image=pair.image.tobytes(), size=(width, height),
                                        format="RGB")
            image.sync_with_audio = self._sync_with_audio
            image.metadata["vivify"] = meta
            out = self._audio_out
            if out is None:
                return
            audio = SpeechOutputAudioRawFrame(audio=out(pair.audio), sample_rate=out.rate,
                                              num_channels=1)
            audio.metadata["vivify"] = meta
            await self.push_frame(image)
            await self.push_frame(audio)
            if self._release_stops:
                self._release_stops = False
                while self._held_stops:
                    await self.push_frame(self._held_stops.popleft())

    async def _watch(self, session: Avatar) -> None:
        async for event in session.events():
            kind = event.get("type")
            if kind == "playback_started":
                await self._call_event_handler("on_playback_started", event)
            elif kind == "playback_finished":
                if not event.get("interrupted"):
                    self._release_stops = True
                if not self._utterance_audio:
                    self._idle.set()
                await self._call_event_handler("on_playback_finished", event)
            elif kind == "error":
                log.warning("Vivify session: %s: %s", event.get("code"), event.get("message"))
                await self._call_event_handler("on_avatar_error", event)
