"""Shared fixtures: the face models (fetched once), the default portrait and its prepared pack."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


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
def preparer(face_models: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from vivify.engines.avatar.pack import AvatarPreparer

    return AvatarPreparer(cache_dir=tmp_path_factory.mktemp("avatars"))


@pytest.fixture(scope="session")
def pack(preparer, astronaut):  # type: ignore[no-untyped-def]
    return preparer.prepare(png_bytes(astronaut))


@pytest.fixture(scope="session")
def renderer(pack):  # type: ignore[no-untyped-def]
    from vivify.engines.render.renderer import Renderer

    return Renderer(pack)
