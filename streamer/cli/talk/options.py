"""``vivify talk``'s options, checked once from the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vivify.streamer.cli.talk.errors import EXIT_USAGE, TalkError

DEFAULT_SERVER = "http://127.0.0.1:8080"

Mode = Literal["mirror", "broadcast"]


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

