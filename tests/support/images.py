"""Images as a client uploads them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB uint8 array as PNG file bytes (what ``POST /v1/avatars`` and the preparer take)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
