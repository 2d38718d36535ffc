"""The rig: motion vector → target keypoints for one avatar.

Everything here is scale-invariant: displacements are written in units of the avatar's
inter-pupil distance ``s`` along the face's own axes (``ex`` from the subject's right eye to the
left eye, ``ey`` down the face), so the same motion looks the same on any crop size or face.

The expression part is *linear* in the motion vector (a per-avatar basis built once), which keeps
it cheap and trivially exportable (one matmul). Two parts are not linear, and are small:

* ``lip_press`` closes whatever gap the other dimensions opened, so a /p b m/ reads as closed
  even while the jaw is open;
* head pose is a rotation of the 3-D landmarks (MediaPipe's relative depth) about a pivot behind
  the face, projected orthographically, so the nose moves more than the ears (parallax).

Points beyond the face ("halo" points on two rings around it) follow the head rigidly so hair
and ears move with it; the renderer's head mask keeps background and torso still.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vivify.engines.avatar import face_topology as ft
from vivify.engines.motion.vector import INDEX, MOTION_DIM, RIG_VERSION, clip_motion

__all__ = ["RIG_VERSION", "Rig", "RigPose"]

# Head pose limits. Kept modest: there is nothing behind a head that turns too far.
MAX_YAW_DEG = 12.0
MAX_PITCH_DEG = 10.0
MAX_ROLL_DEG = 10.0
MAX_SHIFT_X = 0.15  # × s
MAX_SHIFT_Y = 0.10  # × s
MAX_SCALE = 0.08  # relative
PIVOT_BEHIND_FACE = 0.7  # × s behind the face outline: roughly the neck's axis
PIVOT_BELOW_BRIDGE = 0.35  # × s below the nose bridge: ear height

# Expression magnitudes, × s.
JAW_DROP = 0.32
JAW_NARROW = 0.04
STRETCH = 0.12
ROUND_IN = 0.13
ROUND_POUT = 0.025
LIP_RAISE = 0.08
LIP_DEPRESS = 0.08
SMILE_UP = 0.10
SMILE_OUT = 0.09
CHEEK_LIFT = 0.04
BROW_LIFT = 0.11
BROW_DOWN = 0.06
BROW_IN = 0.05
PRESS_THIN = 0.02
# A closed lid keeps a hair of the gap so the flow never collapses to zero area.
LID_UPPER_TRAVEL = 0.93
LID_LOWER_TRAVEL = 0.04
GAZE_X = 0.17  # × eye width
GAZE_Y = 0.09  # × eye width

HALO_RINGS = (1.3, 1.65)  # × half the face size
HALO_POINTS_PER_RING = 16

LINEAR_DIMS = (
    "jaw_open", "lip_stretch", "lip_round", "upper_lip_raise", "lower_lip_depress", "smile",
    "blink_l", "blink_r", "brow_raise", "brow_frown",
)
JAW_BASIS = LINEAR_DIMS.index("jaw_open")


@dataclass(frozen=True)
class RigPose:
    """Target positions for one frame, all in crop pixels."""

    points: np.ndarray  # (P, 2): the 478 landmarks followed by the halo points
    iris_offset: np.ndarray  # (2, 2): gaze shift of the right and left iris, pixels
    expression: np.ndarray  # (P, 2): the points before head pose (for the renderer's mouth cut)
    motion: np.ndarray  # (MOTION_DIM,): the clamped motion vector that made this pose
    # (2, 9, 2): where the teeth sit, rigidly: the rest mouth line (midway between the inner
    # lips at rest) moved by the head pose alone (the upper row, on the skull) and carried by
    # jaw_open too (the lower row, on the jaw). See Rig.teeth_lines.
    teeth: np.ndarray


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


class Rig:
    """Per-avatar rig built from the source landmarks (478×3, crop pixels)."""

    def __init__(self, landmarks: np.ndarray, crop_size: int) -> None:
        if landmarks.shape != (ft.N_LANDMARKS, 3):
            raise ValueError(f"landmarks must be ({ft.N_LANDMARKS}, 3), got {landmarks.shape}")
        lm = landmarks.astype(np.float64)
        right_eye, left_eye = lm[ft.RIGHT_IRIS_CENTER, :2], lm[ft.LEFT_IRIS_CENTER, :2]
        self.scale = float(np.linalg.norm(left_eye - right_eye))
        if self.scale < 1.0:
            raise ValueError("degenerate landmarks: the eyes coincide")
        ex = (left_eye - right_eye) / self.scale
        ey = np.array([-ex[1], ex[0]])
        self.axes = np.stack([ex, ey])  # rows: face x and y directions in the image
        self.crop_size = crop_size
        halo = self._halo(lm)
        self.source = np.concatenate([lm, halo], axis=0)  # (P, 3)
        self.n_points = len(self.source)
        # Face coordinates (units of s) relative to the mouth centre.
        mouth = (lm[61, :2] + lm[291, :2]) / 2
        self._uv = ((self.source[:, :2] - mouth) @ self.axes.T) / self.scale
        self.basis = self._linear_basis(lm)  # (len(LINEAR_DIMS), P, 2) pixels per unit motion
        self._linear_index = np.array([INDEX[d] for d in LINEAR_DIMS])
        bridge = lm[ft.NOSE_BRIDGE]
        oval_depth = float(np.median(lm[list(ft.FACE_OVAL), 2]))
        self.pivot = np.array([
            bridge[0] + PIVOT_BELOW_BRIDGE * self.scale * ey[0],
            bridge[1] + PIVOT_BELOW_BRIDGE * self.scale * ey[1],
            oval_depth + PIVOT_BEHIND_FACE * self.scale,
        ])
        self._eye_width = np.array([
            np.linalg.norm(lm[133, :2] - lm[33, :2]), np.linalg.norm(lm[263, :2] - lm[362, :2]),
        ])

    # ------------------------------------------------------------------ construction
    def _halo(self, lm: np.ndarray) -> np.ndarray:
        """Points on rings around the face that move rigidly with the head (hair, ears)."""
        oval = lm[list(ft.FACE_OVAL)]
        centre = oval.mean(axis=0)
        half = (oval[:, :2].max(axis=0) - oval[:, :2].min(axis=0)) / 2
        angles = np.linspace(0, 2 * np.pi, HALO_POINTS_PER_RING, endpoint=False)
        rings = []
        for k, ring in enumerate(HALO_RINGS):
            a = angles + k * np.pi / HALO_POINTS_PER_RING  # stagger the rings
            xy = centre[:2] + ring * half * np.stack([np.cos(a), np.sin(a)], axis=1)
            z = np.full((len(a), 1), float(np.median(oval[:, 2])))
            rings.append(np.concatenate([xy, z], axis=1))
        return np.concatenate(rings, axis=0)

    def _linear_basis(self, lm: np.ndarray) -> np.ndarray:
        """Displacement per unit of each linear dimension, in crop pixels."""
        n = self.n_points
        uv = self._uv
        u, v = uv[:, 0], uv[:, 1]
        half_mouth = max(abs(u[291] - u[61]) / 2, 1e-3)
        un = np.clip(u / half_mouth, -1.0, 1.0)  # -1..1 across the mouth
        centre_w = np.clip(1.0 - un**2, 0.0, 1.0)  # 1 mid-lip, 0 at the corners

        def group(idx: tuple[int, ...], drop_corners: bool = False) -> np.ndarray:
            keep = [i for i in idx if not (drop_corners and i in ft.MOUTH_CORNERS)]
            return np.array(keep, dtype=int)

        lips = group(ft.LIPS_UPPER_OUTER + ft.LIPS_LOWER_OUTER + ft.LIPS_UPPER_INNER
                     + ft.LIPS_LOWER_INNER)
        upper = group(ft.LIPS_UPPER_OUTER + ft.LIPS_UPPER_INNER, drop_corners=True)
        lower = group(ft.LIPS_LOWER_OUTER + ft.LIPS_LOWER_INNER, drop_corners=True)
        corners = group(ft.MOUTH_CORNERS)
        brows = group(ft.RIGHT_BROW + ft.LEFT_BROW)
        upper_lids = group(ft.RIGHT_EYE_UPPER[1:-1] + ft.LEFT_EYE_UPPER[1:-1])
        lower_lids = group(ft.RIGHT_EYE_LOWER[1:-1] + ft.LEFT_EYE_LOWER[1:-1])
        cheeks = group(ft.CHEEKS)
        lower_face = group((*ft.LOWER_FACE, ft.CHIN))
        oval = group(ft.FACE_OVAL)

        uvd = {name: np.zeros((n, 2)) for name in LINEAR_DIMS}  # face units

        # Jaw: lower lip and chin drop together; the jaw line less towards the hinge.
        jaw = uvd["jaw_open"]
        hinge_v = float(np.mean(v[list(ft.JAW_HINGE)]))
        chin_v = float(v[ft.CHIN])
        w_oval = _smoothstep((v[oval] - hinge_v) / max(chin_v - hinge_v, 1e-3))
        jaw[oval, 1] = JAW_DROP * w_oval
        jaw[lower, 1] = JAW_DROP * (1.0 - 0.5 * un[lower] ** 2)
        jaw[lower, 0] = -JAW_NARROW * un[lower]
        jaw[corners, 1] = JAW_DROP * 0.45
        jaw[corners, 0] = -JAW_NARROW * np.sign(u[corners])
        jaw[lower_face, 1] = JAW_DROP * np.clip(1.0 - 0.25 * un[lower_face] ** 2, 0.6, 1.0)
        jaw[cheeks, 1] = JAW_DROP * 0.12 * (v[cheeks] > -0.6)

        stretch = uvd["lip_stretch"]
        stretch[lips, 0] = STRETCH * un[lips]
        stretch[cheeks, 0] = 0.3 * STRETCH * np.sign(u[cheeks])

        rnd = uvd["lip_round"]
        rnd[lips, 0] = -ROUND_IN * un[lips]
        rnd[group(ft.LIPS_UPPER_OUTER, True), 1] = -ROUND_POUT
        rnd[group(ft.LIPS_LOWER_OUTER, True), 1] = ROUND_POUT
        rnd[group(ft.LIPS_UPPER_INNER, True), 1] = -0.4 * ROUND_POUT * centre_w[
            group(ft.LIPS_UPPER_INNER, True)]
        rnd[group(ft.LIPS_LOWER_INNER, True), 1] = 0.4 * ROUND_POUT * centre_w[
            group(ft.LIPS_LOWER_INNER, True)]

        uvd["upper_lip_raise"][upper, 1] = -LIP_RAISE * np.sqrt(centre_w[upper])
        uvd["upper_lip_raise"][[98, 327, 2], 1] = -0.2 * LIP_RAISE
        uvd["lower_lip_depress"][lower, 1] = LIP_DEPRESS * np.sqrt(centre_w[lower])
        uvd["lower_lip_depress"][[18, 83, 313], 1] = 0.35 * LIP_DEPRESS

        smile = uvd["smile"]
        smile[lips, 0] = SMILE_OUT * un[lips] * np.abs(un[lips])
        smile[lips, 1] = -SMILE_UP * un[lips] ** 2
        smile[cheeks, 0] = 0.15 * SMILE_OUT * np.sign(u[cheeks])
        smile[cheeks, 1] = -CHEEK_LIFT
        smile[lower_lids, 1] = -0.015

        brow = uvd["brow_raise"]
        brow[brows, 1] = -BROW_LIFT
        brow[upper_lids, 1] = -0.015
        brow[[10, 338, 109, 297, 67], 1] = -0.03

        frown = uvd["brow_frown"]
        mid_u = u[ft.NOSE_BRIDGE]
        inner = np.isin(np.arange(n), ft.BROW_INNER)
        w_frown = np.where(inner, 1.0, 0.5)
        frown[brows, 1] = BROW_DOWN * w_frown[brows]
        frown[brows, 0] = -np.sign(u[brows] - mid_u) * BROW_IN * w_frown[brows]
        frown[upper_lids, 1] = 0.01

        basis = np.zeros((len(LINEAR_DIMS), n, 2))
        for k, name in enumerate(LINEAR_DIMS):
            basis[k] = (uvd[name] @ self.axes) * self.scale  # face units → pixels
        # Blinks are written in pixels directly: each upper-lid point travels to its partner.
        xy = lm[:, :2]
        for name, up, lo in (
            ("blink_r", ft.RIGHT_EYE_UPPER, ft.RIGHT_EYE_LOWER),
            ("blink_l", ft.LEFT_EYE_UPPER, ft.LEFT_EYE_LOWER),
        ):
            k = LINEAR_DIMS.index(name)
            up_i, lo_i = np.array(up[1:-1]), np.array(lo[1:-1])
            gap = xy[lo_i] - xy[up_i]
            basis[k, up_i] = LID_UPPER_TRAVEL * gap
            basis[k, lo_i] = -LID_LOWER_TRAVEL * gap
        return basis.astype(np.float32)

    # ------------------------------------------------------------------ per frame
    def pose(self, motion_vec: np.ndarray) -> RigPose:
        """Target keypoints for one motion vector (clamped to the valid ranges first)."""
        m = clip_motion(np.asarray(motion_vec, dtype=np.float32).reshape(MOTION_DIM))
        coeffs = m[self._linear_index].astype(np.float64)
        xy = self.source[:, :2] + np.tensordot(coeffs, self.basis, axes=1)
        expression = self._press_lips(xy, float(m[INDEX["lip_press"]]))
        xy = self.head_pose(expression, m)
        ex, ey = self.axes
        gx, gy = float(m[INDEX["gaze_x"]]), float(m[INDEX["gaze_y"]])
        iris_offset = np.stack([
            (gx * GAZE_X * w) * ex + (gy * GAZE_Y * w) * ey for w in self._eye_width
        ])
        return RigPose(points=xy.astype(np.float32), iris_offset=iris_offset.astype(np.float32),
                       expression=expression.astype(np.float32), motion=m,
                       teeth=self.teeth_lines(m).astype(np.float32))

    def teeth_lines(self, m: np.ndarray) -> np.ndarray:
        """RigPose.teeth for the clamped motion ``m``: (2, 9, 2), the 9 points between the
        mouth corners. The upper row's line is the rest mouth line under the head pose; the
        lower row's is that line carried by the jaw (jaw_open's motion of the lower lip)."""
        up, lo = list(ft.LIPS_UPPER_INNER[1:-1]), list(ft.LIPS_LOWER_INNER[1:-1])
        rest = self.source[:, :2]
        mid = (rest[up] + rest[lo]) / 2
        jaw = rest.copy()
        jaw[lo] = mid + float(m[INDEX["jaw_open"]]) * self.basis[JAW_BASIS][lo]
        skull, carried = self.head_pose(rest, m), self.head_pose(jaw, m)
        return np.stack([(skull[up] + skull[lo]) / 2, carried[lo]])

    def _press_lips(self, xy: np.ndarray, press: float) -> np.ndarray:
        """Close the inner-lip gap by ``press`` (1 = lips meet), thinning the lips a little."""
        if press <= 0.0:
            return xy
        xy = xy.copy()
        ey = self.axes[1]
        up_in, lo_in = np.array(ft.LIPS_UPPER_INNER[1:-1]), np.array(ft.LIPS_LOWER_INNER[1:-1])
        up_out, lo_out = np.array(ft.LIPS_UPPER_OUTER[1:-1]), np.array(ft.LIPS_LOWER_OUTER[1:-1])
        gap = np.maximum((xy[lo_in] - xy[up_in]) @ ey, 0.0)  # (9,) along the face's down axis
        half = (press * gap / 2)[:, None] * ey
        thin = press * PRESS_THIN * self.scale * ey
        xy[up_in] += half
        xy[lo_in] -= half
        xy[up_out] += 0.6 * half + thin
        xy[lo_out] -= 0.6 * half + thin
        return xy

    def head_pose(self, xy: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Rotate, shift and scale expression-stage points ``xy`` (P, 2) by ``m``'s head pose."""
        yaw = np.deg2rad(MAX_YAW_DEG) * float(m[INDEX["head_yaw"]])
        pitch = np.deg2rad(MAX_PITCH_DEG) * float(m[INDEX["head_pitch"]])
        roll = np.deg2rad(MAX_ROLL_DEG) * float(m[INDEX["head_roll"]])
        shift = (MAX_SHIFT_X * float(m[INDEX["head_tx"]]) * self.axes[0]
                 + MAX_SHIFT_Y * float(m[INDEX["head_ty"]]) * self.axes[1]) * self.scale
        scale = 1.0 + MAX_SCALE * float(m[INDEX["head_scale"]])
        if yaw == pitch == roll == 0.0 and scale == 1.0 and not shift.any():
            return xy
        rel = np.concatenate([xy, self.source[:, 2:3]], axis=1) - self.pivot
        cy, sy = np.cos(yaw), np.sin(yaw)
        cp, sp = np.cos(pitch), np.sin(pitch)
        cr, sr = np.cos(roll), np.sin(roll)
        r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        rotated = rel @ (r_roll @ r_pitch @ r_yaw).T
        return rotated[:, :2] * scale + self.pivot[:2] + shift
