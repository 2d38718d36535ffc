"""The motion vector: the one vocabulary every driver, model and renderer speaks.

One frame of motion is a float32 vector of ``MOTION_DIM`` named, normalised dimensions.
Drivers (the baseline driver, the learned generator) produce it; the rig turns it into
keypoints; the renderer turns keypoints into pixels. The names, order and ranges below are a
versioned contract: a model file or an AvatarPack made for another ``RIG_VERSION`` is refused.

Units are deliberately abstract (``-1..1`` or ``0..1``) so that models never see pixels;
``vivify.engines.render.rig`` owns the mapping to degrees and face-relative distances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RIG_VERSION = "rig-1"


@dataclass(frozen=True)
class MotionDim:
    """One named dimension of the motion vector, with its valid range and rest value."""

    name: str
    low: float
    high: float
    doc: str
    rest: float = 0.0


MOTION_DIMS: tuple[MotionDim, ...] = (
    # Head pose (rigid): angles map to at most ±12° yaw, ±10° pitch/roll in
    # vivify.engines.render.rig.
    MotionDim("head_yaw", -1.0, 1.0, "turn right(-)/left(+) from the viewer's side"),
    MotionDim("head_pitch", -1.0, 1.0, "nod: up(-)/down(+)"),
    MotionDim("head_roll", -1.0, 1.0, "tilt in the image plane, clockwise(+)"),
    MotionDim("head_tx", -1.0, 1.0, "horizontal shift of the head"),
    MotionDim("head_ty", -1.0, 1.0, "vertical shift of the head (breathing, nods)"),
    MotionDim("head_scale", -1.0, 1.0, "head distance: closer(+)/further(-)"),
    # Mouth.
    MotionDim("jaw_open", 0.0, 1.0, "jaw drop; opens the mouth cavity"),
    MotionDim("lip_stretch", 0.0, 1.0, "mouth corners outwards (ee, s)"),
    MotionDim("lip_round", 0.0, 1.0, "corners inwards, lips pushed together (oo, w)"),
    MotionDim("upper_lip_raise", 0.0, 1.0, "upper lip up, shows upper teeth (f, v)"),
    MotionDim("lower_lip_depress", 0.0, 1.0, "lower lip down, shows lower teeth"),
    MotionDim("lip_press", 0.0, 1.0, "lips closed and pressed (p, b, m)"),
    MotionDim("smile", -1.0, 1.0, "corners up and out(+)/down(-)"),
    # Eyes and brows.
    MotionDim("blink_l", -0.5, 1.0, "subject's left eye: closed(1)/wide(-)"),
    MotionDim("blink_r", -0.5, 1.0, "subject's right eye: closed(1)/wide(-)"),
    MotionDim("gaze_x", -1.0, 1.0, "irises towards the viewer's left(-)/right(+)"),
    MotionDim("gaze_y", -1.0, 1.0, "irises up(-)/down(+)"),
    MotionDim("brow_raise", 0.0, 1.0, "both brows up (surprise)"),
    MotionDim("brow_frown", 0.0, 1.0, "brows down and together (anger, focus)"),
)

MOTION_NAMES: tuple[str, ...] = tuple(d.name for d in MOTION_DIMS)
MOTION_DIM = len(MOTION_DIMS)
INDEX: dict[str, int] = {name: i for i, name in enumerate(MOTION_NAMES)}
LOW = np.array([d.low for d in MOTION_DIMS], dtype=np.float32)
HIGH = np.array([d.high for d in MOTION_DIMS], dtype=np.float32)
REST = np.array([d.rest for d in MOTION_DIMS], dtype=np.float32)


def rest_motion() -> np.ndarray:
    """The neutral pose: the portrait exactly as it was photographed."""
    return np.array([d.rest for d in MOTION_DIMS], dtype=np.float32)


def motion(**values: float) -> np.ndarray:
    """Build a motion vector from named values, e.g. ``motion(jaw_open=0.6, blink_l=1)``."""
    vec = rest_motion()
    for name, value in values.items():
        if name not in INDEX:
            raise ValueError(f"unknown motion dimension {name!r}; known: {', '.join(MOTION_NAMES)}")
        vec[INDEX[name]] = value
    return vec


def clip_motion(vec: np.ndarray) -> np.ndarray:
    """Clamp a (..., MOTION_DIM) array to the valid ranges; the rig never sees wild values.

    A non-finite value (NaN from a bad control, ±inf from an overflowing sum) becomes that
    dimension's rest value: ``np.clip`` passes NaN through, and a NaN coordinate reaching
    OpenCV's remap or fillPoly crashes the whole process, not just the session.
    """
    if vec.shape[-1] != MOTION_DIM:
        raise ValueError(f"motion vectors have {MOTION_DIM} dims, got shape {vec.shape}")
    vec = np.asarray(vec, dtype=np.float32)
    finite = np.isfinite(vec)
    if not finite.all():
        vec = np.where(finite, vec, np.broadcast_to(REST, vec.shape))
    return np.clip(vec, LOW, HIGH).astype(np.float32, copy=False)


def finite_clip(value: float, low: float, high: float, default: float) -> float:
    """One scalar control, finite and within ``low..high`` (``default`` when not finite)."""
    value = float(value)
    return default if not math.isfinite(value) else min(max(value, low), high)


# Emotion presets: offsets added to the driver's motion (VASA-1's emotion control), scaled by
# an intensity in 0..1. They are rig presets, not model outputs, so every driver gets them.
EMOTIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"smile": 0.8, "lip_stretch": 0.2, "blink_l": 0.15, "blink_r": 0.15,
              "brow_raise": 0.1},
    "sad": {"smile": -0.6, "brow_frown": 0.35, "brow_raise": 0.3, "head_pitch": 0.25,
            "blink_l": 0.25, "blink_r": 0.25},
    "surprised": {"brow_raise": 0.9, "blink_l": -0.45, "blink_r": -0.45, "jaw_open": 0.2,
                  "head_pitch": -0.15},
    "angry": {"brow_frown": 0.9, "lip_press": 0.4, "smile": -0.3, "blink_l": 0.2, "blink_r": 0.2,
              "head_pitch": 0.15},
}


def emotion_offset(name: str, intensity: float = 1.0) -> np.ndarray:
    """The motion offset of an emotion preset at ``intensity`` (0 = none, 1 = full)."""
    if name not in EMOTIONS:
        raise ValueError(f"unknown emotion {name!r}; known: {', '.join(EMOTIONS)}")
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"emotion intensity must be within 0..1, got {intensity}")
    vec = np.zeros(MOTION_DIM, dtype=np.float32)
    for dim, value in EMOTIONS[name].items():
        vec[INDEX[dim]] = value * intensity
    return vec
