"""Finding a face the first look missed: detection retried on conditioned copies.

The face detector is trained on photos. A pencil sketch with paper grain, a dark or washed-out
scan, a face that fills the whole frame or one tilted past the detector's range comes back
with nothing, and the user is left with ``no_face``. Before giving up, detection runs again on
copies that remove what defeats it, cheapest first, and stops at the first that finds a face:

- contrast equalisation (CLAHE on the luminance): dark, flat or faded images;
- denoising (median, then a light Gaussian), and denoising + equalisation: grain, hatching;
- half scale (noise averages out) and padding (a face cropped at the frame's edges);
- small rotations (±20°, ±40°): tilted heads and sideways scans.

Each copy carries the map back to the original's pixels, so the detection is returned in the
original's coordinates. The landmark model then runs on the original with the photometric
conditioning that helped (same geometry, less noise), or on the original for geometric ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from vivify.engines.avatar.face_landmarks import FaceDetection

ROTATIONS_DEG = (20.0, -20.0, 40.0, -40.0)
PAD = 0.25  # padding on each side, × the longer side


Condition = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Found:
    """A face found on a conditioned copy, mapped back to the image searched."""

    face: FaceDetection
    faces: int  # how many faces that copy showed
    how: str | None  # the conditioning that made the difference; None = the original
    condition: Condition | None = None  # apply to the full image before the landmark model


def equalise(rgb: np.ndarray) -> np.ndarray:
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8))
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def denoise(rgb: np.ndarray) -> np.ndarray:
    k = 5 if max(rgb.shape[:2]) >= 600 else 3
    return cv2.GaussianBlur(cv2.medianBlur(rgb, k), (0, 0), 1.0)


def _map_detection(face: FaceDetection, to_original: np.ndarray) -> FaceDetection:
    x0, y0, x1, y1 = face.box
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64)
    mapped = corners @ to_original[:, :2].T + to_original[:, 2]
    keypoints = face.keypoints.astype(np.float64) @ to_original[:, :2].T + to_original[:, 2]
    lo, hi = mapped.min(axis=0), mapped.max(axis=0)
    return FaceDetection(box=(float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])),
                         score=face.score, keypoints=keypoints.astype(np.float32))


def _geometric(rgb: np.ndarray) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, copy, 2×3 map from the copy's pixels to the original's)."""
    h, w = rgb.shape[:2]
    half = cv2.resize(rgb, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    yield "half scale", half, np.array([[w / half.shape[1], 0, 0], [0, h / half.shape[0], 0]])
    p = round(PAD * max(h, w))
    padded = cv2.copyMakeBorder(rgb, p, p, p, p, cv2.BORDER_REPLICATE)
    yield "padding", padded, np.array([[1.0, 0, -p], [0, 1.0, -p]])
    for angle in ROTATIONS_DEG:
        forward = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        cos, sin = abs(forward[0, 0]), abs(forward[0, 1])
        bw, bh = int(h * sin + w * cos), int(h * cos + w * sin)
        forward[:, 2] += (bw / 2 - w / 2, bh / 2 - h / 2)
        rotated = cv2.warpAffine(rgb, forward, (bw, bh), borderMode=cv2.BORDER_REPLICATE)
        yield f"rotation {angle:+.0f}°", rotated, cv2.invertAffineTransform(forward)


Detect = Callable[[np.ndarray], list[FaceDetection]]
Confirm = Callable[[np.ndarray, FaceDetection], bool]


def find_face(rgb: np.ndarray, detect: Detect, confirm: Confirm | None = None) -> Found | None:
    """The largest face in ``rgb``, trying conditioned copies when the original shows none.

    ``detect`` finds faces in an image (in that image's pixels, largest first). ``confirm``
    (image, face) → bool vets each detection: grain and conditioning make false faces out of
    texture (a helmet's collar under paper grain was one, found on the *original*), so the
    landmark model's presence score is asked before one is accepted. Run this on a bounded
    copy of a big portrait: every retry costs one detection on the copy.
    """
    def first(img: np.ndarray) -> tuple[FaceDetection, int] | None:
        found = [f for f in detect(img) if confirm is None or confirm(img, f)]
        return (found[0], len(found)) if found else None

    hit = first(rgb)
    if hit is not None:
        return Found(hit[0], hit[1], None)

    def clean_equalised(img: np.ndarray) -> np.ndarray:
        return equalise(denoise(img))

    photometric: tuple[tuple[str, Condition], ...] = (
        ("contrast equalisation", equalise), ("denoising", denoise),
        ("denoising and contrast equalisation", clean_equalised))
    for how, condition in photometric:
        hit = first(condition(rgb))
        if hit is not None:
            return Found(hit[0], hit[1], how, condition)
    for how, copy, to_original in _geometric(rgb):
        hit = first(copy) or first(denoise(copy))
        if hit is not None:
            return Found(_map_detection(hit[0], to_original), hit[1], how)
    return None
