"""``vivify serve``: its flags come from the settings table of streamer/server/config.py."""

from __future__ import annotations

import argparse
from typing import Any

from vivify.streamer.server.config import ServerConfig, add_arguments


def cmd_serve(args: argparse.Namespace) -> int:
    from vivify.streamer.server.serve import serve

    return serve(ServerConfig.from_args(args))  # ValueError (bad setting) → exit 2


def add_serve_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``serve``: one flag per ServerConfig field, each also a ``VIVIFY_*`` variable."""
    p: argparse.ArgumentParser = sub.add_parser(
        "serve", help="run the streaming server (HTTP, WebSocket, WebRTC)",
        description="Every flag can also be set by its VIVIFY_* environment variable; a flag "
                    "wins over the variable (docs/api.md, Configuration).")
    add_arguments(p)
    p.set_defaults(func=cmd_serve)
    return p
