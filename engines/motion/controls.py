"""VASA-1 style optional signals a session sets on its motion driver: emotion, gaze, distance.

Each driver decides what the controls mean for it (:meth:`MotionDriver.set_controls`): the
learned generator takes them as model input and follows them itself
(``generator.control_input``); the baseline driver adds their :func:`motion_offset` to its
motion. Nobody else looks at the driver's type to apply them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vivify.engines.motion.vector import EMOTIONS, INDEX, emotion_offset, finite_clip

GAZE_GAIN = 1.0  # gaze control (−1..1) → gaze_x / gaze_y offset
DISTANCE_GAIN = 1.0  # distance control (−1 far .. 1 near) → head_scale offset


@dataclass
class Controls:
    """The controls as a caller sets them (the API, a plugin, a test).

    The API validates every value at its edge; :meth:`clamped` clamps them again (finite,
    within range) so no caller can hand OpenCV or an ONNX graph a NaN or an infinity.
    """

    emotion: str = "neutral"
    intensity: float = 1.0
    gaze: tuple[float, float] | None = None
    distance: float = 0.0  # -1 far .. 1 near

    def clamped(self) -> ClampedControls:
        emotion = self.emotion if self.emotion in EMOTIONS else "neutral"
        gx, gy = self.gaze if self.gaze is not None else (0.0, 0.0)
        return ClampedControls(
            emotion=emotion, intensity=finite_clip(self.intensity, 0.0, 1.0, 1.0),
            gaze=(finite_clip(gx, -1.0, 1.0, 0.0), finite_clip(gy, -1.0, 1.0, 0.0)),
            distance=finite_clip(self.distance, -1.0, 1.0, 0.0))


@dataclass(frozen=True)
class ClampedControls:
    """Controls every driver can use as they are: a known emotion, finite values in range."""

    emotion: str
    intensity: float  # 0..1
    gaze: tuple[float, float]  # each -1..1
    distance: float  # -1..1


def motion_offset(controls: Controls) -> np.ndarray:
    """The controls as a rig offset on a motion frame (for a driver that has no control input):
    the emotion preset at its intensity, gaze on ``gaze_x``/``gaze_y``, distance on
    ``head_scale``."""
    c = controls.clamped()
    vec = emotion_offset(c.emotion, c.intensity)
    vec[INDEX["gaze_x"]] += GAZE_GAIN * c.gaze[0]
    vec[INDEX["gaze_y"]] += GAZE_GAIN * c.gaze[1]
    vec[INDEX["head_scale"]] += DISTANCE_GAIN * c.distance
    return vec
