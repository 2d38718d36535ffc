"""Shared fixtures: the face models (fetched once), the default portrait and its prepared pack.

Helpers (media makers, the live server, waiting for a condition) are in :mod:`tests.support`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.support.images import png_bytes

if TYPE_CHECKING:  # the engines and the server are imported by the tests that use them
    from tests.support.live_server import LiveServer
    from vivify.engines.avatar.pack import AvatarPack, AvatarPreparer
    from vivify.engines.render.renderer import Renderer

__all__ = ["png_bytes"]


@pytest.fixture(scope="session")
def face_models() -> Path:
    """Model files in the user cache (``make setup`` fetched them; fetch if a run skipped it)."""
    from vivify.engines.avatar.model_store import fetch_models

    return fetch_models()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def preparer(face_models: Path, tmp_path_factory: pytest.TempPathFactory) -> AvatarPreparer:
    from vivify.engines.avatar.pack import AvatarPreparer

    return AvatarPreparer(cache_dir=tmp_path_factory.mktemp("avatars"))


@pytest.fixture(scope="session")
def pack(preparer: AvatarPreparer, astronaut: np.ndarray) -> AvatarPack:
    return preparer.prepare(png_bytes(astronaut))


@pytest.fixture(scope="session")
def renderer(pack: AvatarPack) -> Renderer:
    from vivify.engines.render.renderer import Renderer

    return Renderer(pack)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A spoken sentence with bilabials (espeak-ng) in a wav file, per module."""
    from tests.support.media import espeak_wav

    return espeak_wav("Hello there. My name is Peter, and I bought a bottle of milk.",
                      tmp_path_factory.mktemp("speech") / "speech.wav")


@pytest.fixture(scope="module")
def server(face_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real server behind the test token (``tests.support.live_server.TOKEN``), per module."""
    from tests.support.live_server import TOKEN, LiveServer

    with LiveServer(tmp_path_factory.mktemp("home"), TOKEN) as live:
        yield live


@pytest.fixture(scope="module")
def live_server(face_models: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[LiveServer]:
    """A real server for the module's tests (no token, 4 sessions, the default driver); a
    test that needs another configuration starts its own ``LiveServer``."""
    from tests.support.live_server import LiveServer

    with LiveServer(tmp_path_factory.mktemp("home"), None, max_sessions=4) as server:
        yield server
