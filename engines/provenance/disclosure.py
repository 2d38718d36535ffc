"""The visible disclosure: a small "AI-generated" label drawn on every frame.

Why it is built this way:

- The label is rendered **once per frame size** (text with DejaVu Sans or an operator-given font, so
  the label can be in the viewers' language, on a rounded box) into a premultiplied
  RGBA patch; each frame then only blends that patch into a small region: ~0.05 ms at 512²,
  no text layout per frame.
- Sizes are relative to the frame height so the label reads the same on a 256 px preview and a
  1080p render; a floor keeps it legible on small frames.
- Drawn *before* the invisible watermark (:mod:`vivify.engines.provenance.watermark`), so the mark
covers the
  label's pixels too and cropping the label away does not remove the mark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DEFAULT_TEXT = "AI-generated"
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
TEXT_HEIGHT_FRACTION = 0.035  # text height as a share of the frame height
MIN_TEXT_PX = 10  # floor: below this the label is not legible
MARGIN_FRACTION = 0.02  # gap to the frame edges, share of the frame height
PADDING_FRACTION = 0.35  # box padding around the text, share of the text height
MAX_TEXT_CHARS = 64
TEXT_RGB = (255, 255, 255)
BOX_RGB = (0, 0, 0)
BOX_OPACITY = 0.55  # the box behind the text, relative to ``opacity``
FONT_CANDIDATES = (  # Debian's fonts-dejavu-core (present on most Linux hosts), then macOS
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
)


@dataclass(frozen=True)
class DisclosureConfig:
    """What the operator may change; validated once (``ValueError`` names the field)."""

    text: str = DEFAULT_TEXT
    position: str = "bottom-right"
    opacity: float = 0.8  # 0 hides the label, 1 is fully opaque text
    text_height_fraction: float = TEXT_HEIGHT_FRACTION
    font_path: str | None = None  # a .ttf/.otf for scripts DejaVu Sans lacks

    def __post_init__(self) -> None:
        if not self.text.strip() or len(self.text) > MAX_TEXT_CHARS:
            raise ValueError(f"text: 1..{MAX_TEXT_CHARS} characters, got {self.text!r}")
        if not self.text.isprintable():
            raise ValueError(f"text: must be printable (no newlines), got {self.text!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"position: one of {', '.join(POSITIONS)}, got {self.position!r}")
        if not 0.0 <= self.opacity <= 1.0:
            raise ValueError(f"opacity: must be within 0..1, got {self.opacity}")
        if not 0.01 <= self.text_height_fraction <= 0.2:
            raise ValueError("text_height_fraction: must be within 0.01..0.2, "
                             f"got {self.text_height_fraction}")


def _font(px: int, path: str | None) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The configured font, else DejaVu Sans (wide Unicode coverage), else Pillow's own."""
    for candidate in ([path] if path else []) + list(FONT_CANDIDATES):
        try:
            return ImageFont.truetype(candidate, px)
        except (OSError, ImportError):
            continue
    try:
        return ImageFont.load_default(size=px)  # Aileron: Latin letters without accents
    except (OSError, TypeError, ImportError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def render_label(config: DisclosureConfig, frame_height: int) -> tuple[np.ndarray, np.ndarray]:
    """(premultiplied RGB float32 (h, w, 3), alpha float32 (h, w, 1)) of the label patch."""
    text_px = max(MIN_TEXT_PX, round(config.text_height_fraction * frame_height))
    font = _font(text_px, config.font_path)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox(
        (0, 0), config.text, font=font)
    pad = max(2, round(PADDING_FRACTION * text_px))
    w, h = int(right - left) + 2 * pad, int(bottom - top) + 2 * pad
    box = Image.new("L", (w, h), 0)
    ImageDraw.Draw(box).rounded_rectangle((0, 0, w - 1, h - 1), radius=pad, fill=255)
    text = Image.new("L", (w, h), 0)
    ImageDraw.Draw(text).text((pad - int(left), pad - int(top)), config.text, font=font, fill=255)
    a_text = np.asarray(text, dtype=np.float32)[..., None] / 255 * config.opacity
    a_box = np.asarray(box, dtype=np.float32)[..., None] / 255 * config.opacity * BOX_OPACITY
    # Text over box, "over" compositing: alpha and premultiplied colour of the pair.
    alpha = a_text + a_box * (1 - a_text)
    rgb = (np.array(TEXT_RGB, np.float32) * a_text
           + np.array(BOX_RGB, np.float32) * a_box * (1 - a_text))
    return rgb, alpha


class DisclosureLabel:
    """Draws the configured label on frames; patches are cached per frame size."""

    def __init__(self, config: DisclosureConfig | None = None) -> None:
        self.config = config or DisclosureConfig()
        self._cache: dict[tuple[int, int], tuple[slice, slice, np.ndarray, np.ndarray]] = {}

    def region(self, height: int, width: int) -> tuple[slice, slice]:
        """Where the label goes in a frame of this size (rows, columns)."""
        return self._placed(height, width)[:2]

    def _placed(self, height: int, width: int) -> tuple[slice, slice, np.ndarray, np.ndarray]:
        key = (height, width)
        if key not in self._cache:
            if len(self._cache) >= 4:
                self._cache.clear()
            rgb, alpha = render_label(self.config, height)
            h, w = min(alpha.shape[0], height), min(alpha.shape[1], width)
            rgb, alpha = rgb[:h, :w], alpha[:h, :w]
            m = round(MARGIN_FRACTION * height)
            y0 = m if self.config.position.startswith("top") else max(0, height - m - h)
            x0 = m if self.config.position.endswith("left") else max(0, width - m - w)
            self._cache[key] = (slice(y0, y0 + h), slice(x0, x0 + w), rgb, 1 - alpha)
        return self._cache[key]

    def apply(self, frame: np.ndarray, *, inplace: bool = False) -> np.ndarray:
        """Return ``frame`` (H, W, 3) uint8 RGB with the label blended in."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
        out = frame if inplace else frame.copy()
        if self.config.opacity == 0:
            return out
        rows, cols, rgb, keep = self._placed(*frame.shape[:2])
        roi = out[rows, cols]
        roi[...] = np.clip(roi * keep + rgb + 0.5, 0, 255).astype(np.uint8)
        return out


__all__ = ["DisclosureConfig", "DisclosureLabel", "render_label"]
