"""Dense backward flow from sparse control points: thin-plate spline on a coarse grid.

Why this shape: the renderer must turn ~200 moving control points into a 512² sampling map in a
few milliseconds on one core. A thin-plate spline (Bookstein 1989) is linear in the control-point
displacements, so for a fixed avatar the whole spline collapses into one matrix ``phi`` (grid
points × control points) built once. Per frame the forward displacement on a coarse grid is a
single matmul; the *backward* map that ``cv2.remap`` needs is found by the fixed-point iteration
``s ← x − D(s)`` refined by Newton steps; the coarse *absolute* sampling positions are then
upsampled with one ``cv2.resize`` straight into a two-channel map.

The grid carries one ring of points outside the image. Their displacement is zero (the motion
weight is zero at the crop border), so bilinear upsampling reproduces the identity exactly at the
border instead of clamping. A per-avatar weight mask multiplies the flow: where the weight is zero
on all surrounding grid points the map is the identity, so background and torso stay exactly
still, and the head's motion fades out down the neck.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_GRID_STEP = 8  # pixels between coarse grid points
DEFAULT_ITERATIONS = 4  # inversion steps in all (fixed-point, then Newton)
FIXED_POINT_STEPS = 2
MIN_NEWTON_DET = 0.02  # floor on det(I + ∇D) so a near-fold cannot blow a Newton step up
STACK_GAP_ROWS = 8  # zero rows between fields inverted together
REGULARISATION = 3e-3  # smooths the spline a little; keeps it solvable for near-twin points


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    """U(r) = r² log r, written on r² to skip a square root (U = ½ r² log r²)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 0.5 * r2 * np.log(r2)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass(frozen=True)
class GridSpec:
    """Padded coarse grid: point (i, j) sits at pixel ``((j-1)*step + o, (i-1)*step + o)``
    with ``o = (step-1)/2``; rows/columns 0 and last lie outside the image.

    That offset makes a ``cv2.resize`` by exactly ``step`` land grid points on pixel centres.
    """

    height: int
    width: int
    step: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height // self.step + 2, self.width // self.step + 2)

    def points(self) -> np.ndarray:
        gh, gw = self.shape
        off = (self.step - 1) / 2
        ys, xs = np.mgrid[0:gh, 0:gw].astype(np.float32)
        return np.stack([(xs - 1) * self.step + off, (ys - 1) * self.step + off], axis=-1)


class ThinPlateFlow:
    """Per-avatar flow operator: control-point displacements → backward sampling maps."""

    def __init__(
        self,
        controls: np.ndarray,
        weight: np.ndarray,
        grid_step: int = DEFAULT_GRID_STEP,
        iterations: int = DEFAULT_ITERATIONS,
        length_scale: float | None = None,
    ) -> None:
        """``controls`` (N, 2) source pixels; ``weight`` (H, W) in 0..1, the motion mask."""
        if controls.ndim != 2 or controls.shape[1] != 2:
            raise ValueError(f"controls must be (N, 2), got {controls.shape}")
        h, w = weight.shape
        if h % grid_step or w % grid_step:
            raise ValueError(f"image size {w}×{h} must be a multiple of the grid step {grid_step}")
        self.grid = GridSpec(h, w, grid_step)
        self.iterations = iterations
        gh, gw = self.grid.shape
        grid_xy = self.grid.points()
        # Weight sampled at the grid points; the outer ring stays 0.
        grid_weight = np.zeros((gh, gw), np.float32)
        grid_weight[1:-1, 1:-1] = cv2.resize(weight.astype(np.float32), (gw - 2, gh - 2),
                                             interpolation=cv2.INTER_AREA)
        grid_weight[grid_weight < 1e-4] = 0.0
        active = np.flatnonzero(grid_weight.reshape(-1) > 0)
        self._active = active
        norm = float(length_scale or max(h, w))
        c = controls.astype(np.float64) / norm
        n = len(c)
        k = _tps_kernel(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1))
        k[np.diag_indices(n)] += REGULARISATION
        p = np.concatenate([np.ones((n, 1)), c], axis=1)
        system = np.zeros((n + 3, n + 3))
        system[:n, :n] = k
        system[:n, n:] = p
        system[n:, :n] = p.T
        inv = np.linalg.inv(system)[:, :n]  # (N+3, N): displacements → spline coefficients
        g = grid_xy.reshape(-1, 2)[active].astype(np.float64) / norm
        a = np.concatenate([
            _tps_kernel(((g[:, None, :] - c[None, :, :]) ** 2).sum(-1)),
            np.ones((len(g), 1)),
            g,
        ], axis=1)  # (G_active, N+3)
        phi = (a @ inv) * grid_weight.reshape(-1)[active, None]
        self._phi = np.ascontiguousarray(phi, dtype=np.float32)  # (G_active, N)
        self._grid_xy = grid_xy
        self.n_controls = n
        # Pixels whose four surrounding grid points all have zero weight: exactly still.
        self.still = self._upsample(grid_weight[..., None].repeat(2, axis=-1), 0, h)[..., 0] == 0
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        self.identity = np.stack([xs, ys], axis=-1)
        self.identity.flags.writeable = False
        rows, cols = np.nonzero(~self.still)
        # The smallest box holding every pixel that can move: remap only inside it.
        self.moving_box = ((int(rows.min()), int(rows.max()) + 1, int(cols.min()),
                            int(cols.max()) + 1) if len(rows) else (0, 0, 0, 0))

    def forward_field(self, displacements: np.ndarray) -> np.ndarray:
        """Forward displacement on the grid for one or more displacement sets.

        ``displacements`` is (N, 2·C) (C fields side by side); returns (gh, gw, 2·C) float32.
        """
        gh, gw = self.grid.shape
        out = np.zeros((gh * gw, displacements.shape[1]), dtype=np.float32)
        out[self._active] = self._phi @ displacements.astype(np.float32)
        return out.reshape(gh, gw, -1)

    def _sample(self, field: np.ndarray, s: np.ndarray, row_offset: np.ndarray | float = 0.0
                ) -> np.ndarray:
        """Bilinear sample of a grid field at pixel positions ``s`` (..., 2)."""
        step, off = self.grid.step, (self.grid.step - 1) / 2
        gx = (s[..., 0] - off) / step + 1
        gy = (s[..., 1] - off) / step + 1 + row_offset
        shape = gx.shape
        out = cv2.remap(field, gx.reshape(-1, shape[-1]).astype(np.float32),
                        gy.reshape(-1, shape[-1]).astype(np.float32), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
        return out.reshape(*shape, field.shape[-1])

    def invert(self, *fields: np.ndarray) -> np.ndarray:
        """Absolute sampling positions ``s(x)`` with ``s + D(s) = x`` at every grid point.

        Each field is a forward displacement (gh, gw, 2) from :meth:`forward_field`; several
        are inverted together (stacked with a gap of zero rows so sampling never bleeds from one
        into the next), which costs little more than one. Returns (gh, gw, 2) for one field,
        (F, gh, gw, 2) for several. Two fixed-point steps ``s ← x − D(s)`` get close; Newton
        steps with the field's Jacobian then converge fast even where the flow compresses
        strongly (a closing eyelid), where the plain iteration crawls.
        """
        step = self.grid.step
        gh, gw = self.grid.shape
        n = len(fields)
        gap = STACK_GAP_ROWS
        stacked = np.zeros((n * (gh + gap), gw, 2), np.float32)
        for i, f in enumerate(fields):
            stacked[i * (gh + gap):i * (gh + gap) + gh] = f
        jac = np.concatenate([np.gradient(stacked, axis=1), np.gradient(stacked, axis=0)],
                             axis=-1) / step  # dDx/dx, dDy/dx, dDx/dy, dDy/dy
        jac = np.ascontiguousarray(jac, dtype=np.float32)
        x = np.broadcast_to(self._grid_xy, (n, gh, gw, 2))
        offset = (np.arange(n, dtype=np.float32) * (gh + gap))[:, None, None]
        s = np.array(x)
        for k in range(self.iterations):
            d = self._sample(stacked, s, offset)
            if k < FIXED_POINT_STEPS:
                s = x - d
                continue
            j = self._sample(jac, s, offset)
            a, c, b, e = 1 + j[..., 0], j[..., 1], j[..., 2], 1 + j[..., 3]  # I + dD/ds
            rx, ry = s[..., 0] + d[..., 0] - x[..., 0], s[..., 1] + d[..., 1] - x[..., 1]
            det = np.maximum(a * e - b * c, MIN_NEWTON_DET)
            s = s - np.stack([(e * rx - b * ry) / det, (a * ry - c * rx) / det], axis=-1)
        return s[0] if n == 1 else s

    def residual(self, field: np.ndarray, positions: np.ndarray) -> float:
        """Largest |x − (s + D(s))| in pixels: how well :meth:`invert` converged."""
        d = self._sample(field, positions)
        return float(np.abs(positions + d - self._grid_xy).max())

    def _upsample(self, coarse: np.ndarray, row0: int, row1: int) -> np.ndarray:
        """Rows ``row0:row1`` of the full-resolution bilinear upsampling of a grid array."""
        step = self.grid.step
        gh = self.grid.shape[0]
        i0 = max(row0 // step - 1, 0)
        i1 = min(row1 // step + 3, gh)
        sub = np.ascontiguousarray(coarse[i0:i1])
        up = cv2.resize(sub, (sub.shape[1] * step, sub.shape[0] * step),
                        interpolation=cv2.INTER_LINEAR)
        top = row0 - (i0 - 1) * step
        return up[top:top + row1 - row0, step:step + self.grid.width]

    def maps(self, positions: np.ndarray, row0: int = 0,
             row1: int | None = None) -> np.ndarray:
        """Full-resolution ``cv2.remap`` map (rows, W, 2) float32 from grid positions."""
        return self._upsample(positions, row0, self.grid.height if row1 is None else row1)


def jacobian_determinant(maps: np.ndarray) -> np.ndarray:
    """det ∂(map)/∂(x, y) by central differences: > 0 everywhere means the flow never folds."""
    map_x, map_y = maps[..., 0], maps[..., 1]
    dxx = np.gradient(map_x, axis=1)
    dxy = np.gradient(map_x, axis=0)
    dyx = np.gradient(map_y, axis=1)
    dyy = np.gradient(map_y, axis=0)
    return dxx * dyy - dxy * dyx
