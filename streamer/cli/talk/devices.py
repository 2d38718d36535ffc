"""PortAudio (PyAudio) for a live call: finding the devices, opening the streams.

PyAudio is optional and imported only when a device is needed; a missing one becomes the
install hint, and PortAudio's start-up chatter on stderr is silenced unless ``-v``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from vivify.streamer.cli.talk.capture import FRAME_MS, PcmCapture
from vivify.streamer.cli.talk.errors import EXIT_ERROR, EXIT_OK, EXIT_USAGE, TalkError
from vivify.streamer.cli.talk.playout import PlayoutBuffer
from vivify.streamer.optional import import_optional

log = logging.getLogger(__name__)

DEVICE_RATE = 48_000  # Hz asked of PortAudio first: Opus's native rate, no resampling in aiortc
PYAUDIO_HINT = ("the microphone/speaker path needs PyAudio (PortAudio): install the Debian "
                "package portaudio19-dev and the Python package pyaudio (`make setup` does both), "
                "or pass --audio FILE to send a file instead")


def import_pyaudio() -> Any:
    """PyAudio, imported only when a device is needed, with an actionable error if absent."""
    return import_optional("pyaudio", PYAUDIO_HINT, TalkError)


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

