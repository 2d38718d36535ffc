"""The default avatar: ``skimage.data.astronaut()`` (NASA, public domain), shipped in a package.

It is written once to the cache as a PNG so every path (CLI, server, tests) treats it exactly
like an uploaded portrait.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from vivify.engines.avatar.model_store import vivify_home

DEFAULT_AVATAR_ID = "default"


def default_portrait_path() -> Path:
    """Path of the default portrait PNG, created on first use (atomic write)."""
    path = vivify_home() / "portraits" / "default-astronaut.png"
    if path.exists():
        return path
    from PIL import Image
    from skimage import data

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        Image.fromarray(data.astronaut()).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def resolve_portrait(name: str | Path) -> Path:
    """``"default"`` → the default portrait; anything else is a path."""
    return default_portrait_path() if str(name) == DEFAULT_AVATAR_ID else Path(name)
