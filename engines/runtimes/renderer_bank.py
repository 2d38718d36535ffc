"""Per-avatar inputs of the renderer graph (the "avatar bank"), built with numpy from a pack.

Why inputs and not baked constants: the renderer graph
(``engines/runtimes/torch_models/renderer_graph.py``) is the
same for every avatar of a crop size; what differs per avatar (rig basis, thin-plate matrix,
images, palette) is fed as a *bank* of ``A`` avatars plus an ``avatar`` index per batch item.
One engine then serves a batch that mixes avatars (one row per session), engines are built once
per GPU rather than once per portrait, and the bank can stay resident on the device between
calls. The cost is input bytes: ~13 MB per 512² avatar (three float32 images and ``phi``).

This module is numpy only: serving prepares banks without torch; ``export/`` imports the
layout constants so both sides agree.

Layer regions: the graph paints the mouth and eye layers inside *fixed* regions of the aligned
crop (every avatar is aligned the same way: eyes level at 0.42 × S, 0.2 × S apart), which keeps
shapes static for TensorRT. :func:`check_layer_regions` verifies, per avatar, that the layers
stay inside them for extreme motions; an avatar that fails is refused with the reason.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vivify.engines.avatar import face_topology as ft
from vivify.engines.motion.vector import MOTION_DIM, RIG_VERSION, motion
from vivify.engines.render.rig import Rig
from vivify.engines.render.warp import ThinPlateFlow

if TYPE_CHECKING:  # the pack's type only: preparing avatars (LiteRT) is not needed to render
    from vivify.engines.avatar.pack import AvatarPack

BANK_VERSION = "bank-1"
# rig_params layout: face axes (ex, ey) rows, pivot (x, y, z), scale s, eye widths (right, left)
RIG_PARAMS = ("ex_x", "ex_y", "ey_x", "ey_y", "pivot_x", "pivot_y", "pivot_z", "scale",
              "eye_width_r", "eye_width_l")
PALETTE_KEYS = ("lip", "teeth", "cavity", "tongue", "gum", "style")
IMAGE_PLATES = ("crop", "crop_no_iris", "crop_lids")  # 3 channels each, stacked → 9
# Fixed layer regions, fractions of the crop side: (x0, y0, x1, y1).
MOUTH_REGION = (0.20, 0.42, 0.80, 0.92)
EYES_REGION = (0.18, 0.22, 0.82, 0.60)
LID_MARGIN = 0.12  # × eye distance, as vivify.engines.render.layers.composite_lids
BANK_INPUTS = ("source", "basis", "rig_params", "phi", "images", "palette")


@dataclass(frozen=True)
class GraphGeometry:
    """Static shapes of one renderer graph: crop size, flow grid, control points."""

    size: int = 512
    grid_step: int = 8
    iterations: int = 4

    def __post_init__(self) -> None:
        if self.size % self.grid_step or self.size % 8:
            raise ValueError(f"size must be a multiple of 8 and of grid_step, got {self.size}")
        if self.grid_step not in (2, 4, 8):
            raise ValueError(f"grid_step must be 2, 4 or 8, got {self.grid_step}")
        if not 3 <= self.iterations <= 20:
            raise ValueError(f"iterations must be within 3..20, got {self.iterations}")

    @property
    def grid_shape(self) -> tuple[int, int]:
        n = self.size // self.grid_step + 2
        return (n, n)

    @property
    def n_points(self) -> int:
        return ft.N_LANDMARKS + 32  # landmarks + halo points (vivify.engines.render.rig)

    @property
    def controls(self) -> np.ndarray:
        return np.array(list(ft.CONTROL_LANDMARKS) + list(range(ft.N_LANDMARKS, self.n_points)))

    def region(self, frac: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
        """A layer region in pixels (x0, y0, x1, y1)."""
        x0, y0, x1, y1 = (round(f * self.size) for f in frac)
        return x0, y0, x1, y1

    def input_shapes(self) -> dict[str, list[int | str]]:
        """Every graph input's shape; ``batch`` and ``avatars`` are the dynamic axes."""
        gh, gw = self.grid_shape
        p, s = self.n_points, self.size
        return {
            "motion": ["batch", MOTION_DIM],
            "avatar": ["batch"],
            "source": ["avatars", p, 3],
            "basis": ["avatars", 10, p, 2],
            "rig_params": ["avatars", len(RIG_PARAMS)],
            "phi": ["avatars", gh * gw, len(self.controls)],
            "images": ["avatars", 3 * len(IMAGE_PLATES), s, s],
            "palette": ["avatars", len(PALETTE_KEYS), 3],
        }

    def output_shapes(self) -> dict[str, list[int | str]]:
        return {"image": ["batch", self.size, self.size, 3]}


INPUT_DTYPES = {"avatar": "int32"}  # every other input is float32


def _stress_motions() -> list[np.ndarray]:
    """Extreme poses that push the mouth and eyes furthest (head corners × open mouth)."""
    out = []
    for yaw, pitch, roll in itertools.product((-1, 0, 1), repeat=3):
        for scale, tx, ty in ((1, 1, 1), (1, -1, -1), (1, 1, -1), (1, -1, 1)):
            out.append(motion(head_yaw=yaw, head_pitch=pitch, head_roll=roll, head_scale=scale,
                              head_tx=tx, head_ty=ty, jaw_open=1, lower_lip_depress=1,
                              upper_lip_raise=1, lip_stretch=1, smile=1, brow_raise=1,
                              blink_l=-0.5, blink_r=-0.5))
    return out


def check_layer_regions(rig: Rig, geometry: GraphGeometry) -> None:
    """Raise ``ValueError`` if an extreme pose puts a layer outside its fixed region."""
    mouth_idx = list(ft.LIPS_UPPER_INNER + ft.LIPS_LOWER_INNER)
    eye_idx = list(ft.RIGHT_EYE_UPPER + ft.RIGHT_EYE_LOWER + ft.LEFT_EYE_UPPER
                   + ft.LEFT_EYE_LOWER + ft.RIGHT_IRIS + ft.LEFT_IRIS)
    lid = LID_MARGIN * rig.scale + 3.0
    checks = (("mouth", mouth_idx, 4.0, MOUTH_REGION), ("eyes", eye_idx, lid, EYES_REGION))
    for m in _stress_motions():
        pts = rig.pose(m).points
        for name, idx, margin, frac in checks:
            x0, y0, x1, y1 = geometry.region(frac)
            lo, hi = pts[idx].min(axis=0) - margin, pts[idx].max(axis=0) + margin
            if lo[0] < x0 or lo[1] < y0 or hi[0] > x1 or hi[1] > y1:
                raise ValueError(
                    f"this avatar's {name} leaves the renderer graph's fixed {name} region "
                    f"{(x0, y0, x1, y1)} under extreme motion (reaches {lo.round(1)}–"
                    f"{hi.round(1)}); use the CPU renderer for it")


def avatar_entry(pack: AvatarPack, geometry: GraphGeometry | None = None) -> dict[str, np.ndarray]:
    """One avatar's bank rows (no leading axis), float32, checked against the geometry."""
    geo = geometry or GraphGeometry(size=pack.size)
    if pack.size != geo.size:
        raise ValueError(f"pack is {pack.size}² but the graph is {geo.size}²")
    if pack.rig_version != RIG_VERSION:
        raise ValueError(f"pack rig {pack.rig_version!r} != {RIG_VERSION!r}")
    rig = Rig(pack.landmarks, pack.size)
    check_layer_regions(rig, geo)
    controls = geo.controls
    flow = ThinPlateFlow(rig.source[controls, :2], pack.motion_weight, geo.grid_step,
                         geo.iterations, length_scale=pack.size)
    gh, gw = geo.grid_shape
    phi = np.zeros((gh * gw, len(controls)), np.float32)
    phi[flow._active] = flow._phi  # inactive grid points (weight 0) never move
    eye_w = rig._eye_width
    params = np.array([*rig.axes.reshape(-1), *rig.pivot, rig.scale, *eye_w], np.float64)
    images = np.concatenate([getattr(pack, k).transpose(2, 0, 1) for k in IMAGE_PLATES])
    return {
        "source": rig.source.astype(np.float32),
        "basis": rig.basis.astype(np.float32),
        "rig_params": params.astype(np.float32),
        "phi": phi,
        "images": np.ascontiguousarray(images, dtype=np.float32),
        "palette": np.stack([pack.palette[k] for k in PALETTE_KEYS]).astype(np.float32),
    }


def build_bank(packs: list[AvatarPack], geometry: GraphGeometry | None = None
               ) -> dict[str, np.ndarray]:
    """Stack avatars into the graph's bank inputs (leading ``avatars`` axis)."""
    if not packs:
        raise ValueError("a bank needs at least one avatar")
    entries = [avatar_entry(p, geometry) for p in packs]
    return {k: np.stack([e[k] for e in entries]) for k in BANK_INPUTS}


def renderer_feeds(bank: dict[str, np.ndarray], motions: np.ndarray,
                   avatar: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """All graph inputs for a batch: ``motions`` (B, 19), ``avatar`` (B,) rows of the bank."""
    motions = np.ascontiguousarray(np.atleast_2d(motions), dtype=np.float32)
    if avatar is None:
        avatar = np.zeros(len(motions), np.int32)
    return {"motion": motions, "avatar": np.asarray(avatar, dtype=np.int32), **bank}
