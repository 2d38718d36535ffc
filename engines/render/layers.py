"""Synthesised layers a warp alone cannot make: the mouth interior and moving irises.

A warp only moves pixels the portrait already has. Opening a closed mouth would stretch lip
pixels into the gap, so inside the *target* inner-lip polygon we paint a cavity: dark and shaded
towards the back, an upper-teeth band hanging from the upper lip, a lower band riding on the jaw,
a tongue, all coloured from the portrait's own lip and skin tones. Gaze needs the eye white
behind the iris, which preparation inpainted once (``crop_no_iris``); here the iris disc is
pasted at its new place and clipped by the (possibly blinking) lids.

Everything works on small regions of interest around the mouth and eyes to stay well under a
millisecond per frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from vivify.engines.avatar import face_topology as ft
from vivify.engines.render.mouth_interior import NUMPY, interior

SUBPIXEL_BITS = 3  # cv2.fillPoly fixed-point precision: 1/8 px edges
CAVITY_FULL_AT = 0.05  # opening (× eye distance) beyond the source's at which the layer is opaque
GAZE_FULL_AT = 0.08  # |gaze| at which the iris layer is fully on
BLINK_FADE = (0.55, 0.95)  # blink amount over which the closed-lid plate fades in


def remap_region(image: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """``cv2.remap`` with a two-channel float map (which must be contiguous).

    The second map must be ``None``: an *empty array* there silently gives wrong pixels
    (checked with OpenCV 5.0), hence this one wrapper and its type-ignore.
    """
    return cv2.remap(image, np.ascontiguousarray(maps), None,  # type: ignore[call-overload]
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _roi(points: np.ndarray, margin: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    x0, y0 = np.floor(points.min(axis=0) - margin).astype(int)
    x1, y1 = np.ceil(points.max(axis=0) + margin).astype(int)
    h, w = shape
    return max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)


def _polygon_mask(poly: np.ndarray, roi: tuple[int, int, int, int], blur: int = 3) -> np.ndarray:
    x0, y0, x1, y1 = roi
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    pts = np.round((poly - (x0, y0)) * (1 << SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1.0, lineType=cv2.LINE_AA, shift=SUBPIXEL_BITS)
    if blur > 1:
        return np.asarray(cv2.GaussianBlur(mask, (blur, blur), 0), dtype=np.float32)
    return mask


def mouth_opening(points: np.ndarray) -> float:
    """Gap between the inner lips at the middle of the mouth, pixels (negative = overlapping)."""
    return float(points[14, 1] - points[13, 1])


def composite_mouth(frame: np.ndarray, points: np.ndarray, source_points: np.ndarray,
                    palette: dict[str, np.ndarray], eye_distance: float,
                    teeth: np.ndarray) -> None:
    """Paint the mouth interior in place where the target mouth is open beyond the source's.

    ``teeth`` (2, 9, 2) are the rigid rows' lines (vivify.engines.render.rig.RigPose.teeth); the
    interior
    itself is engines/render/mouth_interior.py, shared with the renderer graph.
    """
    source_gap = max(mouth_opening(source_points), 0.0)
    extra = mouth_opening(points) - source_gap
    if extra < 0.0 and source_gap > 1.0:
        _seal_lips(frame, points, palette, eye_distance, min(-extra / source_gap, 1.0))
    strength = float(np.clip(extra / (CAVITY_FULL_AT * eye_distance), 0.0, 1.0))
    if strength <= 0.0:
        return
    upper = points[list(ft.LIPS_UPPER_INNER)]
    lower = points[list(ft.LIPS_LOWER_INNER)]
    poly = np.concatenate([upper, lower[::-1]])
    roi = _roi(poly, 3.0, frame.shape[:2])
    x0, y0, x1, y1 = roi
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    alpha = _polygon_mask(poly, roi) * strength
    # Rows and columns as 1-D arrays, broadcast only where a quantity needs both.
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]

    def line(pts: np.ndarray) -> np.ndarray:  # a lip or teeth line as a function of x
        order = np.argsort(pts[:, 0])
        return np.interp(xs[0], pts[order, 0], pts[order, 1]).astype(np.float32)[None, :]

    centre = np.float32(upper[:, 0].mean())
    half = np.float32(max(float(np.ptp(upper[:, 0])) / 2, 1.0))
    light, levels = float(palette["style"][0]), float(palette["style"][1])
    layer = interior(NUMPY, xs, ys, line(upper), line(lower), line(teeth[0]), line(teeth[1]),
                     centre, half, np.float32(eye_distance), palette["lip"], palette["teeth"],
                     palette["cavity"], palette["tongue"], palette["gum"], np.float32(light),
                     np.float32(levels))
    region = frame[y0:y1, x0:x1].astype(np.float32)
    a = alpha[..., None]
    frame[y0:y1, x0:x1] = np.clip(region + (layer - region) * a, 0, 255).astype(np.uint8)


def _seal_lips(frame: np.ndarray, points: np.ndarray, palette: dict[str, np.ndarray],
               eye_distance: float, amount: float) -> None:
    """Where a portrait's open mouth is closed (/p b m/), draw the line where the lips meet.

    Without it the squeezed strip of the source's teeth shows as a bright thread between lips.
    """
    mid = (points[list(ft.LIPS_UPPER_INNER)] + points[list(ft.LIPS_LOWER_INNER)]) / 2
    roi = _roi(mid, 0.08 * eye_distance + 3, frame.shape[:2])
    x0, y0, x1, y1 = roi
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    line = np.round((mid - (x0, y0)) * (1 << SUBPIXEL_BITS)).astype(np.int32)
    thick = max(1, round(0.02 * eye_distance))
    cv2.polylines(mask, [line], False, 1.0, thick, lineType=cv2.LINE_AA, shift=SUBPIXEL_BITS)
    a = (cv2.GaussianBlur(mask, (3, 3), 0) * 0.8 * amount)[..., None]
    seam = palette["lip"] * 0.8
    region = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(region + (seam - region) * a, 0, 255).astype(np.uint8)


def composite_irises(frame: np.ndarray, points: np.ndarray, iris_offset: np.ndarray,
                     gaze: float, source: np.ndarray, plate: np.ndarray,
                     source_points: np.ndarray, maps: np.ndarray) -> None:
    """Move the irises by ``iris_offset`` inside the target eye openings (in place).

    ``plate`` is the iris-free crop; it is warped with the frame's own maps inside each eye's
    region, so the eye white follows the head exactly like the rest of the face.
    """
    strength = float(np.clip(gaze / GAZE_FULL_AT, 0.0, 1.0))
    if strength <= 0.0:
        return
    eyes = (
        (ft.RIGHT_EYE_UPPER, ft.RIGHT_EYE_LOWER, ft.RIGHT_IRIS, 0),
        (ft.LEFT_EYE_UPPER, ft.LEFT_EYE_LOWER, ft.LEFT_IRIS, 1),
    )
    for upper, lower, iris, k in eyes:
        opening = np.concatenate([points[list(upper)], points[list(lower[::-1])]])
        roi = _roi(opening, 2.0, frame.shape[:2])
        x0, y0, x1, y1 = roi
        if x1 - x0 < 3 or y1 - y0 < 3:
            continue
        base = remap_region(plate, maps[y0:y1, x0:x1]).astype(np.float32)
        # The iris disc from the source, placed at the posed centre plus the gaze shift.
        c_src = source_points[iris[0]]
        radius = float(np.linalg.norm(source_points[list(iris[1:])] - c_src, axis=1).mean())
        c_dst = points[iris[0]] + iris_offset[k]
        # The ROI's pixels, shifted back by the iris motion: a sub-pixel patch of the source.
        centre = ((x0 + x1 - 1) / 2 + c_src[0] - c_dst[0], (y0 + y1 - 1) / 2 + c_src[1] - c_dst[1])
        iris_px = cv2.getRectSubPix(source, (x1 - x0, y1 - y0), centre).astype(np.float32)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        xs = np.arange(x0, x1, dtype=np.float32)[None, :]
        r = np.sqrt((xs - c_dst[0]) ** 2 + (ys - c_dst[1]) ** 2)
        disc = np.clip(radius * 1.05 - r + 0.5, 0.0, 1.0)[..., None]
        eye = base + (iris_px - base) * disc
        a = _polygon_mask(opening, roi) * strength
        region = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = np.clip(region + (eye - region) * a[..., None], 0, 255).astype(
            np.uint8)


def composite_lids(frame: np.ndarray, points: np.ndarray, blink: tuple[float, float],
                   plate: np.ndarray, maps: np.ndarray, eye_distance: float) -> None:
    """Fade in the skinned-over eye (``plate``, warped like the frame) as each blink completes."""
    eyes = ((ft.RIGHT_EYE_UPPER, ft.RIGHT_EYE_LOWER, blink[0]),
            (ft.LEFT_EYE_UPPER, ft.LEFT_EYE_LOWER, blink[1]))
    for upper, lower, amount in eyes:
        strength = float(np.clip((amount - BLINK_FADE[0]) / (BLINK_FADE[1] - BLINK_FADE[0]), 0, 1))
        if strength <= 0.0:
            continue
        outline = np.concatenate([points[list(upper)], points[list(lower[::-1])]])
        roi = _roi(outline, 0.12 * eye_distance, frame.shape[:2])
        x0, y0, x1, y1 = roi
        if x1 - x0 < 3 or y1 - y0 < 3:
            continue
        closed = remap_region(plate, maps[y0:y1, x0:x1]).astype(np.float32)
        # A soft ellipse around the eye: the plate differs from the frame only near the eye.
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ell = ((xs - cx) / ((x1 - x0) / 2)) ** 2 + ((ys - cy) / ((y1 - y0) / 2)) ** 2
        a = (np.clip((1.0 - ell) / 0.35, 0, 1) * strength)[..., None]
        region = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = np.clip(region + (closed - region) * a, 0, 255).astype(np.uint8)
