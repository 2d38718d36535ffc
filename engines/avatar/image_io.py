"""Loading portraits safely: any common format, EXIF orientation applied, sizes bounded.

Why the limits: an upload is untrusted. A 40-megapixel cap stops decompression bombs before the
pixels are decoded (Pillow reads the header first), and the byte cap stops huge uploads early.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vivify.engines.errors import (
    CorruptImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    NotAnImageError,
)

MAX_BYTES = 25 * 1024 * 1024  # 25 MiB
MAX_PIXELS = 40_000_000  # 40 MP, e.g. 7300×5470
MIN_SIDE = 64  # pixels


def read_image_bytes(source: str | Path | bytes) -> bytes:
    """The raw bytes of a portrait, refusing files over ``MAX_BYTES`` before reading them."""
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise NotAnImageError(f"no such file: {path}")
        if path.stat().st_size > MAX_BYTES:
            raise ImageTooLargeError(
                f"{path.name} is {path.stat().st_size / 2**20:.1f} MiB; "
                f"the limit is {MAX_BYTES // 2**20} MiB"
            )
        data = path.read_bytes()
    if len(data) > MAX_BYTES:
        raise ImageTooLargeError(
            f"image is {len(data) / 2**20:.1f} MiB; the limit is {MAX_BYTES // 2**20} MiB"
        )
    if not data:
        raise NotAnImageError("the file is empty")
    return data


def decode_image(data: bytes) -> np.ndarray:
    """Decode JPEG/PNG/WebP/… bytes to RGB uint8 (H, W, 3) with EXIF orientation applied."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageTooLargeError(
                    f"image is {w}×{h} ({w * h / 1e6:.0f} MP); "
                    f"the limit is {MAX_PIXELS / 1e6:.0f} MP"
                )
            img.load()
    except UnidentifiedImageError as exc:
        raise NotAnImageError("not an image (expected JPEG, PNG, WebP, BMP or TIFF)") from exc
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageTooLargeError(f"image is too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageTooLargeError):
            raise
        raise CorruptImageError(f"corrupt or truncated image: {exc}") from exc
    upright: Image.Image = ImageOps.exif_transpose(img)
    if min(upright.size) < MIN_SIDE:
        raise ImageTooSmallError(
            f"image is {upright.size[0]}×{upright.size[1]}; each side must be at least "
            f"{MIN_SIDE} px"
        )
    rgb = np.asarray(upright.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb)


def load_image(source: str | Path | bytes) -> tuple[np.ndarray, bytes]:
    """Read and decode a portrait; returns the RGB pixels and the raw bytes (for hashing)."""
    data = read_image_bytes(source)
    return decode_image(data), data
