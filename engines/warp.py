"""Dense backward flow from sparse control points: thin-plate spline on a coarse grid.

Why this shape: the renderer must turn ~200 moving control points into a 512² sampling map in a
few milliseconds on one core. A thin-plate spline (Bookstein 1989) is linear in the control-point
displacements, so for a fixed avatar the whole spline collapses into one matrix ``phi`` (grid
points × control points) built once. Per frame the forward displacement on a coarse grid is a
single matmul; the *backward* map that ``cv2.remap`` needs is found by the fixed-point iteration
``s ← x − D(s)`` refined by Newton steps; the coarse backward displacement is then
upsampled and added to the identity.

A per-avatar weight mask multiplies the flow, so background and torso (weight 0) stay exactly
still and the head's motion fades out down the neck.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_GRID_STEP = 4  # pixels between coarse grid points
DEFAULT_ITERATIONS = 6  # inversion steps in all (fixed-point, then Newton)
FIXED_POINT_STEPS = 2
MIN_NEWTON_DET = 0.02  # floor on det(I + ∇D) so a near-fold cannot blow a Newton step up
REGULARISATION = 3e-3  # keeps the spline solvable when two control points nearly coincide


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    """U(r) = r² log r, written on r² to skip a square root (U = ½ r² log r²)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 0.5 * r2 * np.log(r2)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass(frozen=True)
class GridSpec:
    """Coarse grid geometry: point (i, j) sits at pixel ``(j*step + (step-1)/2, i*step + ...)``.

    That offset makes ``cv2.resize`` from the grid to full resolution pixel-exact.
    """

    height: int
    width: int
    step: int

    @property
    def shape(self) -> tuple[int, int]:
        return (-(-self.height // self.step), -(-self.width // self.step))

    def points(self) -> np.ndarray:
        gh, gw = self.shape
        off = (self.step - 1) / 2
        ys, xs = np.mgrid[0:gh, 0:gw].astype(np.float32)
        return np.stack([xs * self.step + off, ys * self.step + off], axis=-1)  # (gh, gw, 2)


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
        self.grid = GridSpec(h, w, grid_step)
        self.iterations = iterations
        gh, gw = self.grid.shape
        grid_xy = self.grid.points().reshape(-1, 2)
        grid_weight = cv2.resize(weight.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA)
        active = np.flatnonzero(grid_weight.reshape(-1) > 1e-4)
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
        g = grid_xy[active].astype(np.float64) / norm
        a = np.concatenate([
            _tps_kernel(((g[:, None, :] - c[None, :, :]) ** 2).sum(-1)),
            np.ones((len(g), 1)),
            g,
        ], axis=1)  # (G_active, N+3)
        phi = (a @ inv) * grid_weight.reshape(-1)[active, None]
        self._phi = np.ascontiguousarray(phi, dtype=np.float32)  # (G_active, N)
        self._grid_xy = grid_xy.reshape(gh, gw, 2)
        # Upsampling blurs the grid's zeros into their 4-px neighbourhood: this mask cuts the
        # flow back to exactly zero wherever the weight is zero (background really never moves).
        self._moving = (weight > 0).astype(np.float32)[..., None]
        self.n_controls = n

    def forward_field(self, displacements: np.ndarray) -> np.ndarray:
        """Forward displacement on the grid for one or more displacement sets.

        ``displacements`` is (N, 2·C) (C fields side by side); returns (gh, gw, 2·C) float32.
        """
        gh, gw = self.grid.shape
        out = np.zeros((gh * gw, displacements.shape[1]), dtype=np.float32)
        out[self._active] = self._phi @ displacements.astype(np.float32)
        return out.reshape(gh, gw, -1)

    def invert(self, field: np.ndarray) -> np.ndarray:
        """Backward displacement ``b`` with ``x + b(x) + D(x + b(x)) = x`` on the grid.

        ``field`` is the forward displacement (gh, gw, 2) from :meth:`forward_field`. Two
        fixed-point steps ``s ← x − D(s)`` get close; Newton steps with the field's Jacobian
        then converge fast even where the flow compresses strongly (a closing eyelid), where the
        plain iteration crawls.
        """
        step, off = self.grid.step, (self.grid.step - 1) / 2
        x = self._grid_xy
        jac = np.concatenate([np.gradient(field, axis=1), np.gradient(field, axis=0)],
                             axis=-1) / step  # (gh, gw, 4): dDx/dx, dDy/dx, dDx/dy, dDy/dy
        jac = np.ascontiguousarray(jac, dtype=np.float32)
        s = x.copy()
        for k in range(self.iterations):
            gx = (s[..., 0] - off) / step
            gy = (s[..., 1] - off) / step
            d = cv2.remap(field, gx, gy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            if k < FIXED_POINT_STEPS:
                s = x - d
                continue
            j = cv2.remap(jac, gx, gy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            a, c, b, e = 1 + j[..., 0], j[..., 1], j[..., 2], 1 + j[..., 3]  # I + dD/ds
            rx, ry = s[..., 0] + d[..., 0] - x[..., 0], s[..., 1] + d[..., 1] - x[..., 1]
            det = np.maximum(a * e - b * c, MIN_NEWTON_DET)
            s = s - np.stack([(e * rx - b * ry) / det, (a * ry - c * rx) / det], axis=-1)
        return s - x

    def residual(self, field: np.ndarray, backward: np.ndarray) -> float:
        """Largest |x − (s + D(s))| in pixels: how well :meth:`invert` converged."""
        step, off = self.grid.step, (self.grid.step - 1) / 2
        s = self._grid_xy + backward
        d = cv2.remap(field, (s[..., 0] - off) / step, (s[..., 1] - off) / step,
                      cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return float(np.abs(s + d - self._grid_xy).max())

    def maps(self, backward: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full-resolution ``cv2.remap`` maps from a coarse backward displacement."""
        h, w = self.grid.height, self.grid.width
        full = cv2.resize(backward, (w, h), interpolation=cv2.INTER_LINEAR) * self._moving
        ident_x = np.arange(w, dtype=np.float32)[None, :]
        ident_y = np.arange(h, dtype=np.float32)[:, None]
        return full[..., 0] + ident_x, full[..., 1] + ident_y


def jacobian_determinant(map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """det ∂(map)/∂(x, y) by central differences: > 0 everywhere means the flow never folds."""
    dxx = np.gradient(map_x, axis=1)
    dxy = np.gradient(map_x, axis=0)
    dyx = np.gradient(map_y, axis=1)
    dyy = np.gradient(map_y, axis=0)
    return dxx * dyy - dxy * dyx
