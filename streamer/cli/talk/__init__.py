"""``vivify talk``: a small client of the public API — your voice (or a file) in, the avatar out.

It talks to the server exactly like any other client, through the one API client
(:mod:`vivify.streamer.client`: ``POST /v1/sessions``, WebRTC, the session WebSocket,
``DELETE``), so it doubles as a living example of the API and as a smoke test of a deployed
server.

Why it is built this way:

- **Imports are lazy.** ``vivify.streamer.cli.main`` builds every subcommand's parser on each
  start; aiortc, PyAV, httpx and websockets cost ~1 s to import, and PyAudio (PortAudio) is
  optional, so nothing heavy is imported until ``vivify talk`` actually runs (every module here
  imports only the standard library at its top). A missing PyAudio becomes a clear message.
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

The modules: ``options`` (what was asked), ``devices`` (PortAudio), ``capture`` (microphone),
``playout`` (speaker buffer), ``recorder`` (``--save``), ``report`` (status line and summary),
``call`` (:class:`Talk`, the call itself), ``command`` (argparse and the entry point).
"""

from vivify.streamer.cli.talk.call import Talk, talk
from vivify.streamer.cli.talk.capture import PcmCapture, PcmInput, microphone_track
from vivify.streamer.cli.talk.command import add_talk_parser, run_talk
from vivify.streamer.cli.talk.devices import AudioDevices, import_pyaudio, list_devices, pick_device
from vivify.streamer.cli.talk.errors import (
    EXIT_AUTH,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    TalkError,
)
from vivify.streamer.cli.talk.options import DEFAULT_SERVER, TalkOptions
from vivify.streamer.cli.talk.playout import PlayoutBuffer
from vivify.streamer.cli.talk.recorder import BackgroundRecorder, Recorder
from vivify.streamer.cli.talk.report import ReceiveStats, TalkReport
from vivify.streamer.client.timeline import MediaTimeline

__all__ = [
    "DEFAULT_SERVER", "EXIT_AUTH", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK",
    "EXIT_UNREACHABLE", "EXIT_USAGE", "AudioDevices", "BackgroundRecorder", "MediaTimeline",
    "PcmCapture", "PcmInput", "PlayoutBuffer", "ReceiveStats", "Recorder", "Talk", "TalkError",
    "TalkOptions", "TalkReport", "add_talk_parser", "import_pyaudio", "list_devices",
    "microphone_track", "pick_device", "run_talk", "talk",
]
