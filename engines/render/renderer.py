"""The CPU renderer: motion → keypoints → dense backward flow → warp → layers → paste-back.

Identity is preserved by construction: every output pixel is a pixel of the portrait, moved.
What a warp cannot create (the inside of the mouth, the eye white behind a moved iris) comes
from :mod:`vivify.engines.render.layers`.

The mouth is a *cut*, not a smooth surface: opening a closed mouth with one smooth flow would
need an infinite stretch across the lip line. So the flow is solved twice in one matmul: an
"upper" field in which the inner lower lip follows the upper lip, and a "lower" field in which
the inner upper lip follows the lower lip (the jaw). Grid points above the target mouth line
take the upper field, points below take the lower one; the seam sits inside the cavity layer.
When the two fields agree (mouth not opening) the split costs nothing visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from vivify.engines.avatar import face_topology as ft
from vivify.engines.motion.vector import INDEX
from vivify.engines.render.layers import composite_irises, composite_lids, composite_mouth
from vivify.engines.render.rig import Rig, RigPose
from vivify.engines.render.warp import ThinPlateFlow

if TYPE_CHECKING:  # a type only: rendering needs no face models (LiteRT) loaded
    from vivify.engines.avatar.pack import AvatarPack

SEAM_WIDENING = 1.0  # blend width beyond the mouth corners grows this many px per px of distance
SEAM_MAX_RAMP = 0.25  # ... up to this width, × eye distance
_UPPER_INNER = np.array(ft.LIPS_UPPER_INNER[1:-1])
_LOWER_INNER = np.array(ft.LIPS_LOWER_INNER[1:-1])


@dataclass(frozen=True)
class RenderConfig:
    """Renderer knobs; the defaults are what the benchmarks and tests use."""

    grid_step: int = 8  # flow grid spacing in pixels; the crop size must be a multiple
    iterations: int = 4

    def __post_init__(self) -> None:
        if self.grid_step not in (2, 4, 8):
            raise ValueError(f"grid_step must be 2, 4 or 8, got {self.grid_step}")
        if not 1 <= self.iterations <= 20:
            raise ValueError(f"iterations must be within 1..20, got {self.iterations}")


@dataclass
class Frame:
    """One rendered frame and what produced it (the map is kept for inspection and tests)."""

    image: np.ndarray  # (S, S, 3) uint8 RGB
    pose: RigPose
    maps: np.ndarray  # (S, S, 2) float32: where each output pixel sampled the source crop


class Renderer:
    """Renders one avatar; cheap to call per frame, built once per avatar (~tens of ms)."""

    def __init__(self, pack: AvatarPack, config: RenderConfig | None = None) -> None:
        self.pack = pack
        self.config = config or RenderConfig()
        self.rig = Rig(pack.landmarks, pack.size)
        self._controls = np.array(
            list(ft.CONTROL_LANDMARKS) + list(range(ft.N_LANDMARKS, self.rig.n_points)))
        source_xy = self.rig.source[self._controls, :2]
        self.flow = ThinPlateFlow(source_xy, pack.motion_weight, self.config.grid_step,
                                  self.config.iterations, length_scale=pack.size)
        self._rest_xy = self.rig.source[:, :2].astype(np.float32)

    @property
    def eye_distance(self) -> float:
        return self.rig.scale

    def render(self, motion_vec: np.ndarray) -> Frame:
        """Render the aligned crop for one motion vector."""
        pose = self.rig.pose(motion_vec)
        maps = self._maps(pose)
        image = self.pack.crop.copy()
        y0, y1, x0, x1 = self.flow.moving_box  # outside it every pixel is still
        if y1 > y0:
            # Fixed-point maps (1/32 px) remap faster and keep still pixels exactly still.
            m1, m2 = cv2.convertMaps(np.ascontiguousarray(maps[y0:y1, x0:x1]),
                                     None, cv2.CV_16SC2)  # type: ignore[call-overload]
            image[y0:y1, x0:x1] = cv2.remap(self.pack.crop, m1, m2, cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REPLICATE)
        composite_mouth(image, pose.points, self._rest_xy, self.pack.palette, self.eye_distance,
                        pose.teeth)
        m = pose.motion
        gaze = float(np.hypot(m[INDEX["gaze_x"]], m[INDEX["gaze_y"]]))
        composite_irises(image, pose.points, pose.iris_offset, gaze, self.pack.crop,
                         self.pack.crop_no_iris, self._rest_xy, maps)
        blink = (float(m[INDEX["blink_r"]]), float(m[INDEX["blink_l"]]))
        composite_lids(image, pose.points, blink, self.pack.crop_lids, maps, self.eye_distance)
        return Frame(image=image, pose=pose, maps=maps)

    def _maps(self, pose: RigPose) -> np.ndarray:
        target = pose.points
        delta = (target - self._rest_xy)[self._controls]  # (N, 2)
        if not np.any(np.abs(delta) > 1e-4):
            return self.flow.identity
        # The two sides of the mouth cut, built before head pose so a turn alone never splits.
        expr, rest = pose.expression, self._rest_xy
        expr_up, expr_lo = expr.copy(), expr.copy()
        expr_up[_LOWER_INNER] = expr[_UPPER_INNER] + rest[_LOWER_INNER] - rest[_UPPER_INNER]
        expr_lo[_UPPER_INNER] = expr[_LOWER_INNER] + rest[_UPPER_INNER] - rest[_LOWER_INNER]
        if np.abs(expr_up - expr_lo).max() < 0.25:
            return self.flow.maps(self.flow.invert(self.flow.forward_field(delta)))
        upper = (self.rig.head_pose(expr_up, pose.motion) - rest)[self._controls]
        lower = (self.rig.head_pose(expr_lo, pose.motion) - rest)[self._controls]
        field = self.flow.forward_field(np.concatenate([upper, lower], axis=1))
        pos_up, pos_lo = self.flow.invert(field[..., :2], field[..., 2:])
        size = self.pack.size
        mid = (target[list(ft.LIPS_UPPER_INNER)] + target[list(ft.LIPS_LOWER_INNER)]) / 2
        order = np.argsort(mid[:, 0])
        xs = np.arange(size, dtype=np.float32) + 0.5
        line_y = np.interp(xs, mid[order, 0], mid[order, 1]).astype(np.float32)
        # Inside the mouth the cut is sharp (one anti-aliased pixel); beyond the corners the two
        # fields differ only by a fading remainder, blended over a ramp that widens with the
        # distance from the corner (up to a cap) so the map stays continuous and unfolded there.
        cap = SEAM_MAX_RAMP * self.eye_distance
        outside = np.maximum(mid[order[0], 0] - xs, 0) + np.maximum(xs - mid[order[-1], 0], 0)
        ramp = np.minimum(1.0 + SEAM_WIDENING * outside, cap)
        y0 = min(max(int(np.floor(line_y.min() - cap)), 0), size)
        y1 = min(max(int(np.ceil(line_y.max() + cap)), y0), size)
        rows = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
        t = np.clip((rows - line_y[None, :]) / ramp.astype(np.float32) + 0.5, 0, 1)
        maps = self.flow.maps(pos_up, 0, size)
        lower_maps = self.flow.maps(pos_lo, y0, size)
        band = maps[y0:y1]
        band += (lower_maps[:y1 - y0] - band) * t[..., None]
        maps[y1:] = lower_maps[y1 - y0:]
        return maps

    def paste_back(self, crop: np.ndarray) -> np.ndarray:
        """The full portrait with the rendered crop's *changes* pasted in.

        Pasting the difference (render − source crop) rather than the render keeps the full
        frame bit-identical at rest and wherever nothing moved, with no resampling blur.
        """
        pack = self.pack
        full = pack.full
        hf, wf = full.shape[:2]
        corners = np.array([[0, 0], [pack.size, 0], [0, pack.size], [pack.size, pack.size]],
                           np.float64) @ pack.crop_to_full[:, :2].T + pack.crop_to_full[:, 2]
        x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(corners.max(axis=0)).astype(int), (wf, hf))
        if x1 <= x0 or y1 <= y0:
            return full.copy()
        diff = crop.astype(np.int16) - pack.crop.astype(np.int16)
        m = pack.crop_to_full.copy()
        m[:, 2] -= (x0, y0)
        warped = cv2.warpAffine(diff, m, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out = full.copy()
        region = out[y0:y1, x0:x1].astype(np.int16) + warped
        out[y0:y1, x0:x1] = np.clip(region, 0, 255).astype(np.uint8)
        return out
