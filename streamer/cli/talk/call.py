"""One ``vivify talk`` call: connect through the API client, stream, stop, clean up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vivify.streamer.cli.talk.capture import microphone_track
from vivify.streamer.cli.talk.devices import AudioDevices
from vivify.streamer.cli.talk.errors import (
    EXIT_AUTH,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    TalkError,
)
from vivify.streamer.cli.talk.options import TalkOptions
from vivify.streamer.cli.talk.recorder import BackgroundRecorder
from vivify.streamer.cli.talk.report import ReceiveStats, TalkReport, is_tty, status_printer

if TYPE_CHECKING:
    import av
    from aiortc import RTCPeerConnection
    from aiortc.contrib.media import MediaPlayer
    from aiortc.mediastreams import MediaStreamTrack

    from vivify.streamer.client import ApiClient, ClientError

log = logging.getLogger(__name__)

WS_RATE = 16_000  # the WebSocket's PCM format: s16le mono 16 kHz
WS_CHUNK_SECONDS = 0.1  # one binary message
WS_LEAD_SECONDS = 0.2  # how far ahead of real time a file is pushed (covers network jitter)
TAIL_SECONDS = 1.0  # keep receiving this long after the audio ended (the answer lags)
FINISH_GRACE_SECONDS = 10.0  # a broadcast must report playback_finished this soon after the end
HTTP_TIMEOUT = 15.0
CLOSE_TIMEOUT = 5.0
STATUS_PERIOD = 1.0  # s between status lines on a terminal
STATUS_PERIOD_PIPE = 5.0  # s between status lines when stderr is a file or a pipe


def _api_error(error: ClientError, what: str) -> TalkError:
    """A refusal as one readable line, with what the user can do about it."""
    if error.status == 401:
        return TalkError(f"{what}: the server refused the token ({error.message}); pass --token "
                         "or set VIVIFY_TOKEN", EXIT_AUTH)
    if error.status == 503:
        retry = error.retry_after
        return TalkError(f"{what}: the server is full ({error.message})"
                         + (f"; retry in {retry} s" if retry else ""))
    return TalkError(f"{what}: HTTP {error.status} {error.code}: {error.message}")


class Talk:
    """One call: connect, stream, stop on the first reason, clean up through one path."""

    def __init__(self, opts: TalkOptions, status: Callable[[str], None] | None = None) -> None:
        self.opts = opts
        self.report = TalkReport()
        self.stats = ReceiveStats()
        self._status = status or status_printer()
        self._stop = asyncio.Event()
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._api: ApiClient | None = None
        self._pc: RTCPeerConnection | None = None
        self._ws: Any = None
        self._player: MediaPlayer | None = None
        self._devices: AudioDevices | None = None
        self._recorder: BackgroundRecorder | None = None
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
        from vivify.streamer.client import ApiClient, ClientError, ServerUnreachable, offer_peer
        from vivify.streamer.rtc.peer import ice_servers_from_env

        opts = self.opts
        if opts.uses_microphone or opts.uses_speaker:
            self._devices = AudioDevices(opts.input_device, opts.output_device,
                                         want_input=opts.uses_microphone,
                                         want_output=opts.uses_speaker)
        if opts.save is not None:
            self._recorder = BackgroundRecorder(opts.save)

        self._api = ApiClient(opts.server, opts.token, timeout=HTTP_TIMEOUT)
        audio = self._outgoing_audio() if opts.mode == "mirror" else None
        pc = self._pc = offer_peer(opts.mode, audio, ice_servers=ice_servers_from_env())

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._spawn(self._receive(track), f"receive-{track.kind}")

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and not self._closing:
                self.stop(f"the connection {pc.connectionState}", EXIT_ERROR)

        body = {"avatar": opts.avatar, "mode": opts.mode,
                "video": {"fps": 25, "codec": opts.codec}}
        try:
            data = await self._api.create_session(pc, body)
        except ServerUnreachable as exc:
            raise TalkError(str(exc), EXIT_UNREACHABLE) from exc
        except ClientError as exc:
            raise _api_error(exc, "starting the session") from exc
        self.report.session = data["id"]

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
        if self._recorder is not None:
            self._recorder.add(kind, frame)

    async def _report_status(self) -> None:
        period = STATUS_PERIOD if is_tty() else STATUS_PERIOD_PIPE
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
        from vivify.streamer.client import ClientError

        assert self._api is not None and self.report.session is not None
        try:
            self._ws = await self._api.open_websocket(self.report.session)
        except ClientError as exc:
            raise TalkError(exc.message) from exc
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
        if self._api is not None:
            await self._delete_session(self._api)
            await self._api.aclose()
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

    async def _delete_session(self, api: ApiClient) -> None:
        from vivify.streamer.client import ClientError

        if self.report.session is None:
            return
        try:  # False: the server already closed it (404), nothing to warn about
            await asyncio.wait_for(api.delete_session(self.report.session), CLOSE_TIMEOUT)
        except ClientError as exc:
            self._status(f"warning: DELETE session: HTTP {exc.status}"
                         if exc.status else f"warning: could not delete the session: {exc}")
        except Exception as exc:
            self._status(f"warning: could not delete the session: {exc}")

    async def _finish_recording(self) -> None:
        recorder = self._recorder
        if recorder is not None and await recorder.finish(self._status):
            self.report.saved = recorder.recorder.path
            self.report.saved_frames = recorder.recorder.frames


async def talk(opts: TalkOptions, status: Callable[[str], None] | None = None) -> TalkReport:
    """Run one call with ``opts``; raises :class:`TalkError` when it cannot start."""
    return await Talk(opts, status).run()
