"""``vivify prepare`` (build and cache an avatar pack) and ``vivify fetch-models`` (setup)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vivify.engines.avatar.default_avatar import resolve_portrait


def cmd_prepare(args: argparse.Namespace) -> int:
    from vivify.engines.avatar.pack import AvatarPreparer, avatars_dir

    pack = AvatarPreparer().prepare(resolve_portrait(args.portrait), size=args.size,
                                    use_cache=not args.no_cache)
    info = dict(pack.meta, key=pack.key, cache=str(avatars_dir() / pack.key))
    print(json.dumps(info, indent=2))
    return 0


def cmd_fetch_models(args: argparse.Namespace) -> int:
    from vivify.engines.avatar.model_store import fetch_models

    where = fetch_models(wheel=args.wheel)
    print(f"face models ready in {where}")
    return 0


def add_prepare_parsers(sub: Any) -> None:
    """Register ``prepare`` and ``fetch-models`` on the ``vivify`` subparsers."""
    p = sub.add_parser("prepare", help="prepare (and cache) an avatar from a portrait")
    p.add_argument("portrait", help="image file, or 'default'")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--no-cache", action="store_true")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("fetch-models", help="fetch the face model files (setup step)")
    p.add_argument("--wheel", type=Path, default=None, help="use this mediapipe wheel file")
    p.set_defaults(func=cmd_fetch_models)
