"""Manual face placement: five points a person clicked, when the detector finds no face.

A noisy sketch, a stylised painting or a cartoon can defeat the face detector and still be a
face anyone can point at. The user gives five points in image pixels — the subject's eye
centres, the nose tip and the mouth corners — and the avatar is built from them:

1. the points are checked (finite, inside the image, eyes far enough apart, and a face's
   layout: nose and mouth below the eye line, the right mouth corner on the right eye's side),
   so a mirrored or scrambled placement gets a clear ``bad_points`` error, not a broken rig;
2. the landmark model is run on the region those points define (``detection``); if it finds
   a face there that agrees with the points, its 478 landmarks are used;
3. otherwise a reference mesh (the default avatar's landmarks) is fitted to the five points by
   least squares (an affine map: position, scale, rotation, shear for a turned head), which
   keeps every part of the rig — mouth, lids, irises — where the person said the face is.

"Right" and "left" are the subject's: on a frontal photo the right eye is on the image's left.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vivify.engines.avatar import face_topology as ft
from vivify.engines.avatar.face_landmarks import FaceDetection
from vivify.engines.errors import AvatarInputError, FaceTooSmallError

NAMES = ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")
MESH_INDEX = (ft.RIGHT_IRIS_CENTER, ft.LEFT_IRIS_CENTER, ft.NOSE_TIP, 61, 291)
AGREEMENT = 0.25  # the model's landmarks may differ from the clicks by this × eye distance
# The layout of a face, in eye distances along (x) and below (y) the eye line; generous, so
# caricatures and turned heads pass while swapped or scattered points do not.
NOSE_BELOW = (0.15, 1.4)
MOUTH_BELOW = (0.4, 2.2)
MOUTH_WIDTH = (0.25, 1.8)


class BadPointsError(AvatarInputError):
    code = "bad_points"


@dataclass(frozen=True)
class FacePoints:
    """The five points, (5, 2) float64 in image pixels, in :data:`NAMES` order."""

    xy: np.ndarray

    @classmethod
    def parse(cls, data: Any, width: int, height: int, min_eye_distance: float) -> FacePoints:
        """From JSON text or a mapping ``{name: [x, y]}``; raises :class:`BadPointsError`."""
        if isinstance(data, str | bytes):
            if len(data) > 2000:
                raise BadPointsError("points: at most 2000 characters of JSON")
            try:
                data = json.loads(data, parse_constant=lambda c: math.nan)
            except ValueError as exc:
                raise BadPointsError(f"points are not valid JSON: {exc}") from None
        if not isinstance(data, dict) or set(data) != set(NAMES):
            raise BadPointsError("points must be a JSON object with exactly "
                                 f"{', '.join(NAMES)}, each [x, y] in image pixels")
        rows = []
        for name in NAMES:
            value = data[name]
            if (not isinstance(value, list | tuple) or len(value) != 2
                    or not all(isinstance(v, int | float) and not isinstance(v, bool)
                               for v in value)):
                raise BadPointsError(f"points.{name} must be [x, y], two numbers")
            x, y = float(value[0]), float(value[1])
            if not (math.isfinite(x) and math.isfinite(y) and 0 <= x <= width
                    and 0 <= y <= height):
                raise BadPointsError(f"points.{name} = [{value[0]}, {value[1]}] is not inside "
                                     f"the {width}×{height} image")
            rows.append((x, y))
        points = cls(np.array(rows, dtype=np.float64))
        points._check_layout(min_eye_distance)
        return points

    def _check_layout(self, min_eye_distance: float) -> None:
        eye_r, eye_l, nose, mouth_r, mouth_l = self.xy
        along = eye_l - eye_r
        eye_dist = float(np.hypot(*along))
        if eye_dist < min_eye_distance:
            raise FaceTooSmallError(
                f"the eyes are {eye_dist:.0f} px apart; the minimum is {min_eye_distance:.0f} px")
        x_axis = along / eye_dist
        y_axis = np.array([-x_axis[1], x_axis[0]])  # "down" for an upright frontal face
        mid = (eye_r + eye_l) / 2

        def below(p: np.ndarray) -> float:
            return float((p - mid) @ y_axis) / eye_dist

        mouth_mid = (mouth_r + mouth_l) / 2
        mouth_width = float((mouth_l - mouth_r) @ x_axis) / eye_dist
        if below(nose) < 0 and below(mouth_mid) < 0:
            raise BadPointsError("the points are mirrored or upside down: right_eye is the "
                                 "subject's right eye (the image's left on a frontal photo)")
        checks = ((NOSE_BELOW, below(nose), "the nose tip"),
                  (MOUTH_BELOW, below(mouth_mid), "the mouth"),
                  (MOUTH_WIDTH, mouth_width, "the mouth's width (right corner to left)"))
        for (lo, hi), value, what in checks:
            if not lo <= value <= hi:
                raise BadPointsError(
                    f"{what} is {value:.2f} eye distances from where a face has it "
                    f"({lo}–{hi}): check the order right_eye, left_eye, nose, mouth_right, "
                    "mouth_left")

    def as_dict(self) -> dict[str, list[float]]:
        return {name: [round(float(x), 2), round(float(y), 2)]
                for name, (x, y) in zip(NAMES, self.xy, strict=True)}

    @property
    def eye_distance(self) -> float:
        return float(np.hypot(*(self.xy[1] - self.xy[0])))

    def detection(self) -> FaceDetection:
        """A detection as the face detector would have given it, for the landmark model."""
        eye_r, eye_l, nose, mouth_r, mouth_l = self.xy
        d = self.eye_distance
        mouth = (mouth_r + mouth_l) / 2
        x_axis = (eye_l - eye_r) / d
        ear_r, ear_l = eye_r - x_axis * 0.8 * d, eye_l + x_axis * 0.8 * d
        keypoints = np.array([eye_r, eye_l, nose, mouth, ear_r, ear_l], dtype=np.float32)
        center = (eye_r + eye_l + mouth) / 3
        half = 1.1 * d
        box = (float(center[0] - half), float(center[1] - half),
               float(center[0] + half), float(center[1] + half))
        return FaceDetection(box=box, score=1.0, keypoints=keypoints)

    def agrees_with(self, landmarks: np.ndarray) -> bool:
        """Whether a mesh puts its five points where the person clicked."""
        error = np.hypot(*(landmarks[list(MESH_INDEX), :2] - self.xy).T)
        return bool(error.max() <= AGREEMENT * self.eye_distance)

    def fit(self, template: np.ndarray) -> np.ndarray:
        """The reference mesh ``template`` (478, 3) mapped onto these points (least-squares
        affine on x, y; z scaled with the map's area)."""
        src = template[list(MESH_INDEX), :2].astype(np.float64)
        design = np.hstack([src, np.ones((len(src), 1))])
        affine, *_ = np.linalg.lstsq(design, self.xy, rcond=None)  # (3, 2)
        out = template.astype(np.float64).copy()
        out[:, :2] = np.hstack([out[:, :2], np.ones((len(out), 1))]) @ affine
        out[:, 2] *= math.sqrt(abs(float(np.linalg.det(affine[:2].T))))
        return out.astype(np.float32)
