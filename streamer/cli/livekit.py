"""``vivify livekit-worker``: be a LiveKit agent's avatar, here or in a running server."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def cmd_livekit_worker(args: argparse.Namespace) -> int:
    """Join the agent's room with the engines in this process, or have ``--server`` join it."""
    import asyncio

    from vivify.streamer.integrations.livekit_worker import (
        ask_server,
        require_livekit,
        run_standalone,
    )

    if not args.url or not args.token:
        print("vivify: --url and --token are needed (or LIVEKIT_URL and LIVEKIT_AVATAR_TOKEN)",
              file=sys.stderr)
        return 2
    if args.server:  # plain HTTP: no LiveKit packages needed in this process
        try:
            answer = ask_server(args.server, args.server_token, args.url, args.token, args.avatar)
        except ConnectionError as exc:
            print(f"vivify: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(answer, indent=2))
        return 0
    try:
        require_livekit()
    except ImportError as exc:
        print(f"vivify: {exc}", file=sys.stderr)
        return 2
    from vivify.streamer.server.config import ServerConfig

    config = ServerConfig.from_env(max_sessions=1, session_idle_timeout=0, driver=args.driver)
    try:
        reason = asyncio.run(run_standalone(args.url, args.token, args.avatar, config))
    except ConnectionError as exc:
        print(f"vivify: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    print(f"avatar session ended: {reason}")
    return 0


def add_livekit_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``livekit-worker`` on the ``vivify`` subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "livekit-worker", help="be a LiveKit agent's avatar: join its room, publish face and voice")
    p.add_argument("--url", default=os.environ.get("LIVEKIT_URL"),
                   help="the LiveKit server, wss://… (LIVEKIT_URL)")
    p.add_argument("--token", default=os.environ.get("LIVEKIT_AVATAR_TOKEN"),
                   help="the avatar participant's token, minted by the agent with "
                        "lk.publish_on_behalf (LIVEKIT_AVATAR_TOKEN)")
    p.add_argument("--avatar", default="default", help="avatar id (default)")
    p.add_argument("--server", default=None, metavar="URL",
                   help="have this running `vivify serve` join instead (its engines, batched "
                        "with its other sessions); without it the engines run here")
    p.add_argument("--server-token", default=os.environ.get("VIVIFY_TOKEN"),
                   help="that server's bearer token (VIVIFY_TOKEN)")
    p.add_argument("--driver", choices=("baseline", "learned"), default=None,
                   help="motion driver when the engines run here (VIVIFY_DRIVER, baseline)")
    p.set_defaults(func=cmd_livekit_worker)
    return p
