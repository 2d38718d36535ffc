"""``vivify talk`` on the command line: its arguments and its entry point."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from vivify.streamer.cli.talk.call import talk
from vivify.streamer.cli.talk.devices import list_devices
from vivify.streamer.cli.talk.errors import EXIT_INTERRUPTED, TalkError
from vivify.streamer.cli.talk.options import DEFAULT_SERVER, TalkOptions
from vivify.streamer.cli.talk.report import is_tty


def run_talk(args: argparse.Namespace) -> int:
    """The ``vivify talk`` entry point: an exit code, errors as one line on stderr."""
    try:
        if args.list_devices:
            return list_devices()
        opts = TalkOptions.from_args(args)
        report = asyncio.run(talk(opts))
    except TalkError as exc:
        print(f"\nvivify talk: {exc}" if is_tty() else f"vivify talk: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vivify talk: aborted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if is_tty():
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
