"""The renderer as one batched torch graph: the twin of ``engines/render/renderer.py`` for export.

motion (B, 19) + avatar index (B,) + the avatar bank → keypoints (the rig) → two thin-plate
forward fields (the mouth cut) → fixed-point + Newton inversion with fixed unrolled steps →
bilinear upsampling → one 4-D ``grid_sample`` of the crop → mouth, iris and lid layers →
image (B, S, S, 3), float32 holding integers 0..255.

Why it looks like this:

* **Same maths as the CPU renderer**, step for step: float32 where numpy uses float32, the same
  fixed iteration count (2 fixed-point + 2 Newton steps), ``cv2.remap``'s 1/32-pixel coordinate
  quantisation reproduced with ``round(x·32)/32``, and every layer truncated to integers where
  the CPU code casts to ``uint8``. The CPU renderer's shortcuts (skip the flow at rest, one field
  when the mouth does not split) are data-dependent branches; here both fields are always solved
  and ``where`` picks, which is the same result.
* **TensorRT-native operators only**: MatMul, Gather, GridSample (opset 16+), Resize, TopK (the
  lip lines are sorted by x), Concat, elementwise. No loops, no custom ops, no ScatterND:
  layers are pasted back with Concat.
* **Polygon masks without polygons**: the lip and lid contours run corner to corner, so
  "inside" is "between the upper and the lower line, between the corners"; the anti-aliased
  fill is a vertical distance ramp, then the same 3×3 Gaussian as ``cv2.GaussianBlur``. This
  is the one deliberate approximation (``cv2.fillPoly``'s exact coverage is not a graph op).
* **Fixed layer regions** (``vivify.engines.runtimes.renderer_bank``) keep every shape static.
* **Device-clean** (for the torch runner on CUDA, under CUDA graphs): every constant —
  index lists, one-hot paste matrices, the blur kernel — is a buffer made in ``__init__`` (it
  moves with ``.to(device)``), and ``arange`` is told the inputs' device; ``forward`` never
  builds a tensor from host data, which a CUDA-graph capture forbids (it would be a copy).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vivify.engines.avatar import face_topology as ft
from vivify.engines.motion.vector import HIGH, INDEX, LOW
from vivify.engines.render import layers as L
from vivify.engines.render import mouth_interior as MI
from vivify.engines.render import rig as R
from vivify.engines.render.renderer import SEAM_MAX_RAMP, SEAM_WIDENING
from vivify.engines.render.warp import FIXED_POINT_STEPS, MIN_NEWTON_DET
from vivify.engines.runtimes.renderer_bank import (
    EYES_REGION,
    LID_MARGIN,
    MOUTH_REGION,
    GraphGeometry,
)

TORCH = MI.Ops(clamp=lambda x, lo, hi: torch.clamp(x, min=lo, max=hi), abs=torch.abs,
               floor=torch.floor, exp=torch.exp, sin=torch.sin, channel=lambda a: a[:, None],
               brightness=lambda a: a.mean(dim=1, keepdim=True))
REMAP_SUBPIXEL = 32.0  # cv2.remap's INTER_TAB_SIZE: float maps are rounded to 1/32 px
_UI, _LI = list(ft.LIPS_UPPER_INNER), list(ft.LIPS_LOWER_INNER)
_UO, _LO = list(ft.LIPS_UPPER_OUTER), list(ft.LIPS_LOWER_OUTER)
# Point index sets the graph gathers or pastes, each a buffer ``ix_<name>`` (and for pastes
# ``onehot_<name>`` / ``keep_<name>``) of RendererGraph.
INDEX_SETS = {
    "ui": _UI, "li": _LI, "ui_mid": _UI[1:-1], "li_mid": _LI[1:-1],
    "uo_mid": _UO[1:-1], "lo_mid": _LO[1:-1],
    "r_up": list(ft.RIGHT_EYE_UPPER), "r_lo": list(ft.RIGHT_EYE_LOWER),
    "l_up": list(ft.LEFT_EYE_UPPER), "l_lo": list(ft.LEFT_EYE_LOWER),
    "r_ring": list(ft.RIGHT_IRIS[1:]), "l_ring": list(ft.LEFT_IRIS[1:]),
}
PASTED = ("ui_mid", "li_mid", "uo_mid", "lo_mid")  # sets written with _add_at / _replace


def _const(x: np.ndarray | list, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """``np.interp`` for sorted ``xp``: x (..., X) against (B, K) knots → (B, X).

    Written as a sum of clamped segment ramps (constant beyond the ends), which is elementwise
    and exports to plain ONNX ops; x is (X,) shared or (B, X).
    """
    x0, x1 = xp[:, :-1, None], xp[:, 1:, None]  # (B, K-1, 1)
    dy = (fp[:, 1:] - fp[:, :-1])[..., None]
    xx = x[None, None, :] if x.dim() == 1 else x[:, None, :]
    ramp = torch.clamp((xx - x0) / torch.clamp(x1 - x0, min=1e-6), 0.0, 1.0)
    return fp[:, :1] + (dy * ramp).sum(dim=1)


def sorted_line(points: Tensor) -> tuple[Tensor, Tensor]:
    """Knots (x sorted, y) of a contour given as (B, K, 2)."""
    xs, order = torch.sort(points[..., 0], dim=-1)
    return xs, torch.gather(points[..., 1], 1, order)


def quantise(coord: Tensor) -> Tensor:
    """cv2.remap rounds float map coordinates to 1/32 pixel."""
    return torch.round(coord * REMAP_SUBPIXEL) / REMAP_SUBPIXEL


def sample_pixels(image: Tensor, xy: Tensor, quantised: bool = True) -> Tensor:
    """Bilinear sample (B, C, H, W) at pixel coordinates xy (B, h, w, 2), borders replicated."""
    h, w = (int(d) for d in image.shape[-2:])  # static sizes: constants, not traced shapes
    if quantised:
        xy = quantise(xy)
    grid = _normalise(xy + 0.5, 2.0 / w, 2.0 / h)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def _normalise(xy: Tensor, sx: float, sy: float) -> Tensor:
    """``xy * (sx, sy) - 1`` per channel, with scalars (no constant tensor to place)."""
    return torch.stack([xy[..., 0] * sx, xy[..., 1] * sy], dim=-1) - 1.0


BLUR3 = np.outer([0.25, 0.5, 0.25], [0.25, 0.5, 0.25]).astype(np.float32)[None, None]


def blur3(mask: Tensor, kernel: Tensor) -> Tensor:
    """cv2.GaussianBlur(ksize 3, σ auto = 0.8): ``kernel`` is :data:`BLUR3` (a buffer)."""
    # Zero padding (cv2 reflects): the masks are zero at the region borders anyway.
    return F.conv2d(mask[:, None], kernel, padding=1)[:, 0]


def between_lines(upper: Tensor, lower: Tensor, xs: Tensor, ys: Tensor) -> Tensor:
    """Anti-aliased fill of the polygon ``upper + lower[::-1]`` (both corner to corner).

    ``upper``/``lower`` (B, K, 2); pixel centres xs (X,), ys (Y,) → coverage (B, Y, X).
    """
    ux, uy = sorted_line(upper)
    lx, ly = sorted_line(lower)
    y_up = interp(xs, ux, uy)[:, None, :]  # (B, 1, X)
    y_lo = interp(xs, lx, ly)[:, None, :]
    yy = ys[None, :, None]
    left = torch.minimum(ux[:, :1], lx[:, :1])[..., None]
    right = torch.maximum(ux[:, -1:], lx[:, -1:])[..., None]
    inside_x = (torch.clamp(xs - left + 0.5, 0, 1) * torch.clamp(right - xs + 0.5, 0, 1))
    cover = torch.clamp(yy - y_up + 0.5, 0, 1) * torch.clamp(y_lo - yy + 0.5, 0, 1)
    return cover * inside_x


def paste(image: Tensor, patch: Tensor, x0: int, y0: int) -> Tensor:
    """Put ``patch`` (B, C, h, w) into ``image`` (B, C, H, W) at (x0, y0) with Concat only."""
    h, w = patch.shape[-2:]
    row = torch.cat([image[..., y0:y0 + h, :x0], patch, image[..., y0:y0 + h, x0 + w:]], dim=-1)
    return torch.cat([image[..., :y0, :], row, image[..., y0 + h:, :]], dim=-2)


class RendererGraph(nn.Module):
    """Batched renderer; every per-avatar tensor is an input (see ``renderer_bank``)."""

    grid_xy: Tensor  # buffers, declared for the type checker
    low: Tensor
    high: Tensor
    linear_index: Tensor
    controls: Tensor
    blur_kernel: Tensor

    def __init__(self, geometry: GraphGeometry | None = None) -> None:
        super().__init__()
        self.geo = geo = geometry or GraphGeometry()
        self.size = geo.size
        gh, gw = geo.grid_shape
        self.gh, self.gw, self.step = gh, gw, geo.grid_step
        off = (geo.grid_step - 1) / 2
        ys, xs = np.mgrid[0:gh, 0:gw].astype(np.float32)
        grid_xy = np.stack([(xs - 1) * geo.grid_step + off, (ys - 1) * geo.grid_step + off], -1)
        self.register_buffer("grid_xy", _const(grid_xy), persistent=False)  # (gh, gw, 2)
        self.register_buffer("low", _const(LOW), persistent=False)
        self.register_buffer("high", _const(HIGH), persistent=False)
        self.register_buffer("linear_index", _const([INDEX[d] for d in R.LINEAR_DIMS],
                                                    torch.long), persistent=False)
        self.register_buffer("controls", _const(geo.controls, torch.long), persistent=False)
        self.register_buffer("blur_kernel", _const(BLUR3), persistent=False)
        for name, idx in INDEX_SETS.items():
            self.register_buffer(f"ix_{name}", _const(idx, torch.long), persistent=False)
        for name in PASTED:
            idx = INDEX_SETS[name]
            onehot = np.zeros((geo.n_points, len(idx)), np.float32)
            onehot[idx, np.arange(len(idx))] = 1.0
            keep = np.ones((geo.n_points, 1), np.float32)
            keep[idx] = 0.0
            self.register_buffer(f"onehot_{name}", _const(onehot), persistent=False)
            self.register_buffer(f"keep_{name}", _const(keep), persistent=False)
        self.mouth = geo.region(MOUTH_REGION)
        self.eyes = geo.region(EYES_REGION)

    def ix(self, name: str) -> Tensor:
        """The point indices of :data:`INDEX_SETS` ``name``, on the module's device."""
        return self.get_buffer(f"ix_{name}")

    def gather(self, points: Tensor, name: str) -> Tensor:
        """``points[:, INDEX_SETS[name]]`` with the index buffer (exports to one Gather)."""
        return torch.index_select(points, 1, self.ix(name))

    def arange(self, start: int, end: int, like: Tensor) -> Tensor:
        return torch.arange(start, end, dtype=torch.float32, device=like.device)

    @classmethod
    def from_manifest_config(cls, config: dict) -> RendererGraph:
        """The torch runner's factory: the manifest's ``config`` is the graph geometry."""
        return cls(GraphGeometry(**config) if config else None)

    # ------------------------------------------------------------------ rig
    def head_pose(self, xy: Tensor, z: Tensor, m: Tensor, params: Tensor) -> Tensor:
        """vivify.engines.render.rig.Rig.head_pose for (B, F, P, 2) point sets sharing one motion
        per row."""
        deg = math.pi / 180.0
        yaw = m[:, INDEX["head_yaw"]] * (R.MAX_YAW_DEG * deg)
        pitch = m[:, INDEX["head_pitch"]] * (R.MAX_PITCH_DEG * deg)
        roll = m[:, INDEX["head_roll"]] * (R.MAX_ROLL_DEG * deg)
        ex, ey, pivot, s = params[:, 0:2], params[:, 2:4], params[:, 4:7], params[:, 7:8]
        shift = (R.MAX_SHIFT_X * m[:, INDEX["head_tx"], None] * ex
                 + R.MAX_SHIFT_Y * m[:, INDEX["head_ty"], None] * ey) * s  # (B, 2)
        scale = 1.0 + R.MAX_SCALE * m[:, INDEX["head_scale"]]
        cy, sy, cp, sp = torch.cos(yaw), torch.sin(yaw), torch.cos(pitch), torch.sin(pitch)
        cr, sr = torch.cos(roll), torch.sin(roll)
        zero, one = torch.zeros_like(yaw), torch.ones_like(yaw)

        def mat(*rows: Tensor) -> Tensor:
            return torch.stack(rows, dim=-1).reshape(-1, 3, 3)

        r_yaw = mat(cy, zero, sy, zero, one, zero, -sy, zero, cy)
        r_pitch = mat(one, zero, zero, zero, cp, -sp, zero, sp, cp)
        r_roll = mat(cr, -sr, zero, sr, cr, zero, zero, zero, one)
        rot = r_roll @ r_pitch @ r_yaw  # (B, 3, 3)
        rel = torch.cat([xy, z[:, None].expand(-1, xy.shape[1], -1, -1)], -1)
        rel = rel - pivot[:, None, None, :]
        rotated = rel @ rot.transpose(1, 2)[:, None]  # (B, F, P, 3)
        return (rotated[..., :2] * scale[:, None, None, None] + pivot[:, None, None, :2]
                + shift[:, None, None, :])

    def rig(self, m: Tensor, source: Tensor, basis: Tensor, params: Tensor
            ) -> tuple[Tensor, Tensor]:
        """Expression-stage points (B, P, 2) with lip press, and the iris offsets (B, 2, 2)."""
        coeffs = m[:, self.linear_index]  # (B, 10)
        n_pts = source.shape[1]
        lin = coeffs[:, None, :] @ basis.reshape(-1, basis.shape[1], n_pts * 2)  # (B, 1, 2P)
        xy = source[..., :2] + lin.reshape(-1, n_pts, 2)  # (B, P, 2)
        press = m[:, INDEX["lip_press"], None]  # (B, 1)
        ey, s = params[:, 2:4], params[:, 7:8]
        gap = torch.clamp(((self.gather(xy, "li_mid") - self.gather(xy, "ui_mid"))
                           * ey[:, None]).sum(-1), min=0.0)
        half = (press * gap / 2)[..., None] * ey[:, None]  # (B, 9, 2)
        thin = (press * R.PRESS_THIN * s * ey)[:, None]  # (B, 1, 2)
        delta = torch.zeros_like(xy)
        delta = self._add_at(delta, "ui_mid", half)
        delta = self._add_at(delta, "li_mid", -half)
        delta = self._add_at(delta, "uo_mid", 0.6 * half + thin)
        delta = self._add_at(delta, "lo_mid", -(0.6 * half + thin))
        expression = xy + delta
        ex = params[:, 0:2]
        gx, gy = m[:, INDEX["gaze_x"], None], m[:, INDEX["gaze_y"], None]
        iris = torch.stack([(gx * R.GAZE_X * w) * ex + (gy * R.GAZE_Y * w) * ey
                            for w in (params[:, 8:9], params[:, 9:10])], dim=1)
        return expression, iris

    def teeth_lines(self, m: Tensor, rest: Tensor, z: Tensor, basis: Tensor, params: Tensor
                    ) -> Tensor:
        """vivify.engines.render.rig.Rig.teeth_lines: (B, 2, 9, 2), the upper row's line on the
        skull and
        the lower row's carried by the jaw."""
        mid = (self.gather(rest, "ui_mid") + self.gather(rest, "li_mid")) / 2
        jaw_basis = basis[:, R.JAW_BASIS]  # (B, P, 2)
        carried = mid + m[:, INDEX["jaw_open"], None, None] * self.gather(jaw_basis, "li_mid")
        jaw = self._replace(rest, "li_mid", carried)
        posed = self.head_pose(torch.stack([rest, jaw], 1), z, m, params)
        skull = (self.gather(posed[:, 0], "ui_mid") + self.gather(posed[:, 0], "li_mid")) / 2
        return torch.stack([skull, self.gather(posed[:, 1], "li_mid")], 1)

    def _add_at(self, base: Tensor, name: str, value: Tensor) -> Tensor:
        """``base[:, idx] += value`` as a one-hot matmul (exports to MatMul, not ScatterND)."""
        onehot = self.get_buffer(f"onehot_{name}")  # (P, K)
        return base + onehot @ value.expand(-1, onehot.shape[1], -1)  # @ (B, K, 2)

    # ------------------------------------------------------------------ flow
    def _sample_grid(self, field: Tensor, s: Tensor) -> Tensor:
        """vivify.engines.render.warp.ThinPlateFlow._sample: field (N, C, gh, gw) at pixel
        positions s."""
        off = (self.step - 1) / 2
        g = quantise((s - off) / self.step + 1.0)
        grid = _normalise(g, 2.0 / (self.gw - 1), 2.0 / (self.gh - 1))
        return F.grid_sample(field, grid, mode="bilinear", padding_mode="border",
                             align_corners=True).permute(0, 2, 3, 1)

    def invert(self, field: Tensor) -> Tensor:
        """Positions s (N, gh, gw, 2) with s + D(s) = x: ``iterations`` unrolled steps."""
        f = field.permute(0, 3, 1, 2)  # (N, 2, gh, gw)
        jac = self.jacobian(f)
        x = self.grid_xy.expand(field.shape[0], -1, -1, -1)
        s = x
        for k in range(self.geo.iterations):
            d = self._sample_grid(f, s)
            if k < FIXED_POINT_STEPS:
                s = x - d
                continue
            j = self._sample_grid(jac, s)
            a, c, b, e = 1 + j[..., 0], j[..., 1], j[..., 2], 1 + j[..., 3]
            r = s + d - x
            rx, ry = r[..., 0], r[..., 1]
            det = torch.clamp(a * e - b * c, min=MIN_NEWTON_DET)
            s = s - torch.stack([(e * rx - b * ry) / det, (a * ry - c * rx) / det], dim=-1)
        return s

    def jacobian(self, f: Tensor) -> Tensor:
        """(N, 4, gh, gw): dDx/dx, dDy/dx, dDx/dy, dDy/dy as the CPU's ``np.gradient``.

        The CPU stacks the upper and lower fields with zero rows between them, so along y the
        last row always sees a zero below it and the lower field's first row a zero above;
        the upper (or only) field's first row and both outer columns are one-sided.
        """
        pad_y = F.pad(f, (0, 0, 1, 1))
        dy = (pad_y[..., 2:, :] - pad_y[..., :-2, :]) / 2  # central, zero outside
        top = f[..., 1:2, :] - f[..., 0:1, :]  # one-sided first row
        pairs = (-1, 2, f.shape[1], 1)  # (B, [upper, lower], C, 1, gw)
        dy_top = torch.cat([top.reshape(*pairs, self.gw)[:, :1],
                            dy[..., 0:1, :].reshape(*pairs, self.gw)[:, 1:]], dim=1)
        dy = torch.cat([dy_top.reshape(-1, f.shape[1], 1, self.gw), dy[..., 1:, :]], dim=-2)
        dx = torch.cat([f[..., 1:2] - f[..., 0:1], (f[..., 2:] - f[..., :-2]) / 2,
                        f[..., -1:] - f[..., -2:-1]], dim=-1)
        return torch.cat([dx, dy], dim=1) / self.step

    def upsample(self, positions: Tensor) -> Tensor:
        """Grid positions (N, gh, gw, 2) → full-resolution maps (N, 2, S, S) (cv2.resize)."""
        p = positions.permute(0, 3, 1, 2)
        up = F.interpolate(p, size=(self.gh * self.step, self.gw * self.step),
                           mode="bilinear", align_corners=False)
        st, n = self.step, self.size
        return up[..., st:st + n, st:st + n]

    def maps(self, m: Tensor, expression: Tensor, rest: Tensor, z: Tensor, phi: Tensor,
             params: Tensor) -> tuple[Tensor, Tensor]:
        """Backward maps (B, 2, S, S) and the posed target points (B, P, 2)."""
        e_ui, e_li = self.gather(expression, "ui_mid"), self.gather(expression, "li_mid")
        off_lo = self.gather(rest, "li_mid") - self.gather(rest, "ui_mid")
        expr_up = self._replace(expression, "li_mid", e_ui + off_lo)
        expr_lo = self._replace(expression, "ui_mid", e_li - off_lo)
        posed = self.head_pose(torch.stack([expression, expr_up, expr_lo], 1), z, m, params)
        target = posed[:, 0]
        disp = (posed - rest[:, None])[:, :, self.controls]  # (B, 3, N, 2)
        split = (expr_up - expr_lo).abs().amax(dim=(1, 2)) >= 0.25  # renderer's branch
        upper = torch.where(split[:, None, None], disp[:, 1], disp[:, 0])
        lower = torch.where(split[:, None, None], disp[:, 2], disp[:, 0])
        both = torch.cat([upper, lower], dim=-1)  # (B, N, 4)
        field = (phi @ both).reshape(-1, self.gh, self.gw, 2, 2)  # (B, gh, gw, field, xy)
        fields = field.permute(0, 3, 1, 2, 4).reshape(-1, self.gh, self.gw, 2)  # (2B, ...)
        maps = self.upsample(self.invert(fields)).reshape(-1, 2, 2, self.size, self.size)
        pos_up, pos_lo = maps[:, 0], maps[:, 1]
        # The mouth line and the seam ramp (vivify.engines.render.renderer.Renderer._maps).
        mid = (self.gather(target, "ui") + self.gather(target, "li")) / 2
        mx, my = sorted_line(mid)
        xs = self.arange(0, self.size, m) + 0.5
        line_y = interp(xs, mx, my)  # (B, S)
        cap = SEAM_MAX_RAMP * params[:, 7:8]
        outside = torch.clamp(mx[:, :1] - xs, min=0) + torch.clamp(xs - mx[:, -1:], min=0)
        ramp = torch.minimum(1.0 + SEAM_WIDENING * outside, cap)  # (B, S)
        rows = xs[None, :, None]
        t = torch.clamp((rows - line_y[:, None, :]) / ramp[:, None, :] + 0.5, 0.0, 1.0)
        return pos_up + (pos_lo - pos_up) * t[:, None], target

    def _replace(self, base: Tensor, name: str, value: Tensor) -> Tensor:
        """``base[:, idx] = value`` (a keep mask and a one-hot paste)."""
        keep = self.get_buffer(f"keep_{name}")
        return base * keep + self._add_at(torch.zeros_like(base), name, value)

    # ------------------------------------------------------------------ layers
    def mouth_layer(self, image: Tensor, target: Tensor, rest: Tensor, palette: Tensor,
                    eye: Tensor, teeth_lines: Tensor) -> Tensor:
        """vivify.engines.render.layers.composite_mouth (seal + cavity) inside the fixed mouth
        region."""
        x0, y0, x1, y1 = self.mouth
        xs, ys = self.arange(x0, x1, image), self.arange(y0, y1, image)
        region = image[..., y0:y1, x0:x1]  # (B, 3, h, w)
        src_gap = torch.clamp(rest[:, 14, 1] - rest[:, 13, 1], min=0.0)
        extra = (target[:, 14, 1] - target[:, 13, 1]) - src_gap  # (B,)
        upper, lower = self.gather(target, "ui"), self.gather(target, "li")
        # Seal: the line where the lips meet, when an open-mouthed portrait closes.
        amount = torch.where((extra < 0) & (src_gap > 1.0),
                             torch.clamp(-extra / torch.clamp(src_gap, min=1e-6), max=1.0),
                             torch.zeros_like(extra))
        mid = (upper + lower) / 2
        mx, my = sorted_line(mid)
        line = interp(xs, mx, my)[:, None, :]
        thick = torch.clamp(torch.round(0.02 * eye), min=1.0)[:, None, None]
        span = (torch.clamp(xs - mx[:, :1, None] + 0.5, 0, 1)
                * torch.clamp(mx[:, -1:, None] - xs + 0.5, 0, 1))
        seal = torch.clamp(thick / 2 + 0.5 - (ys[None, :, None] - line).abs(), 0, 1) * span
        a = (blur3(seal, self.blur_kernel) * 0.8 * amount[:, None, None])[:, None]
        seam = (palette[:, 0] * 0.8)[..., None, None]
        region = torch.floor(torch.clamp(region + (seam - region) * a, 0, 255))
        # The interior (engines/render/mouth_interior.py, the same maths as the CPU renderer).
        strength = torch.clamp(extra / (L.CAVITY_FULL_AT * eye), 0.0, 1.0)[:, None, None]
        alpha = blur3(between_lines(upper, lower, xs, ys), self.blur_kernel) * strength
        ux, _ = sorted_line(upper)

        def column_y(points: Tensor) -> Tensor:  # (B, K, 2) → y per column (B, 1, w)
            px, py = sorted_line(points)
            return interp(xs, px, py)[:, None, :]

        centre = upper[..., 0].mean(dim=1)[:, None, None]
        half = torch.clamp((ux[:, -1:] - ux[:, :1])[..., None] / 2, min=1.0)
        lip, teeth, cavity, tongue, gum = (palette[:, k][..., None, None] for k in range(5))
        style = palette[:, 5]
        layer = MI.interior(TORCH, xs[None, None, :], ys[None, :, None], column_y(upper),
                            column_y(lower), column_y(teeth_lines[:, 0]),
                            column_y(teeth_lines[:, 1]), centre, half,
                            eye[:, None, None], lip, teeth, cavity, tongue, gum,
                            style[:, 0, None, None], style[:, 1, None, None])
        region = torch.floor(torch.clamp(region + (layer - region) * alpha[:, None], 0, 255))
        return paste(image, region, x0, y0)

    def eye_layers(self, image: Tensor, target: Tensor, rest: Tensor, iris: Tensor,
                   maps: Tensor, crop: Tensor, plates: Tensor, m: Tensor, eye: Tensor
                   ) -> Tensor:
        """vivify.engines.render.layers.composite_irises then composite_lids, in the fixed eyes
        region."""
        x0, y0, x1, y1 = self.eyes
        xs, ys = self.arange(x0, x1, image), self.arange(y0, y1, image)
        region = image[..., y0:y1, x0:x1]
        roi_maps = maps[..., y0:y1, x0:x1].permute(0, 2, 3, 1)  # (B, h, w, 2)
        warped = torch.round(sample_pixels(plates, roi_maps))  # (B, 6, h, w)
        no_iris, lids = warped[:, :3], warped[:, 3:]
        gaze = torch.sqrt(m[:, INDEX["gaze_x"]] ** 2 + m[:, INDEX["gaze_y"]] ** 2)
        strength = torch.clamp(gaze / L.GAZE_FULL_AT, 0.0, 1.0)[:, None, None, None]
        h, w = ys.shape[0], xs.shape[0]
        eyes = (("r_up", "r_lo", "r_ring", ft.RIGHT_IRIS[0], 0),
                ("l_up", "l_lo", "l_ring", ft.LEFT_IRIS[0], 1))
        masks = []
        for upper, lower, ring, centre, k in eyes:
            opening = between_lines(self.gather(target, upper), self.gather(target, lower),
                                    xs, ys)
            masks.append(opening)
            c_src = rest[:, centre]  # (B, 2)
            radius = (self.gather(rest, ring) - c_src[:, None]).norm(dim=-1).mean(dim=1)
            c_dst = target[:, centre] + iris[:, k]
            shift = c_src - c_dst  # (B, 2)
            shifted = torch.stack([(xs[None, None, :] + shift[:, 0, None, None]).expand(-1, h, w),
                                   (ys[None, :, None] + shift[:, 1, None, None]).expand(-1, h, w)],
                                  dim=-1)  # (B, h, w, 2)
            iris_px = torch.round(sample_pixels(crop, shifted, quantised=False))
            r = torch.sqrt((xs[None, None, :] - c_dst[:, 0, None, None]) ** 2
                           + (ys[None, :, None] - c_dst[:, 1, None, None]) ** 2)
            disc = torch.clamp(radius[:, None, None] * 1.05 - r + 0.5, 0.0, 1.0)[:, None]
            eye_img = no_iris + (iris_px - no_iris) * disc
            a = (blur3(opening, self.blur_kernel)[:, None] * strength)
            region = torch.floor(torch.clamp(region + (eye_img - region) * a, 0, 255))
        blinks = (m[:, INDEX["blink_r"]], m[:, INDEX["blink_l"]])
        lo_f, hi_f = L.BLINK_FADE
        for (upper, lower, *_), amount, _mask in zip(eyes, blinks, masks, strict=True):
            s = torch.clamp((amount - lo_f) / (hi_f - lo_f), 0, 1)[:, None, None]
            outline = torch.cat([self.gather(target, upper), self.gather(target, lower)], dim=1)
            margin = (LID_MARGIN * eye)[:, None]
            lo = torch.clamp(torch.floor(outline.amin(dim=1) - margin), min=0.0)
            hi = torch.clamp(torch.ceil(outline.amax(dim=1) + margin), max=float(self.size))
            c = (lo + hi) / 2
            semi = (hi - lo) / 2
            ell = (((xs[None, None, :] - c[:, 0, None, None]) / semi[:, 0, None, None]) ** 2
                   + ((ys[None, :, None] - c[:, 1, None, None]) / semi[:, 1, None, None]) ** 2)
            a = (torch.clamp((1.0 - ell) / 0.35, 0, 1) * s)[:, None]
            region = torch.floor(torch.clamp(region + (lids - region) * a, 0, 255))
        return paste(image, region, x0, y0)

    # ------------------------------------------------------------------ forward
    def forward(self, motion: Tensor, avatar: Tensor, source: Tensor, basis: Tensor,
                rig_params: Tensor, phi: Tensor, images: Tensor, palette: Tensor) -> Tensor:
        """(B, 19), (B,) int → image (B, S, S, 3) float32 holding integers 0..255."""
        def pick(bank: Tensor) -> Tensor:  # the batch rows' avatars: Gather on int32
            return torch.index_select(bank, 0, avatar)

        source, basis, params = pick(source), pick(basis), pick(rig_params)  # (B, ...)
        phi, images, palette = pick(phi), pick(images), pick(palette)
        m = torch.minimum(torch.maximum(motion, self.low), self.high)  # clip_motion
        rest, z = source[..., :2], source[..., 2:]
        eye = params[:, 7]  # eye distance (the rig's scale), pixels
        expression, iris = self.rig(m, source, basis, params)
        maps, target = self.maps(m, expression, rest, z, phi, params)
        crop = images[:, 0:3]
        image = torch.round(sample_pixels(crop, maps.permute(0, 2, 3, 1)))  # (B, 3, S, S)
        image = self.mouth_layer(image, target, rest, palette, eye,
                                 self.teeth_lines(m, rest, z, basis, params))
        image = self.eye_layers(image, target, rest, iris, maps, crop, images[:, 3:9], m, eye)
        return image.permute(0, 2, 3, 1).reshape(-1, self.size, self.size, 3)
