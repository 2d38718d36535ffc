"""The one seam between audio and motion: every driver (baseline, learned) looks like this.

A driver is a per-session streaming object. Audio goes in as 16 kHz mono float32 chunks of any
size; motion frames (25 fps, ``MOTION_DIM`` floats each) come out as soon as the driver has the
audio (plus its fixed lookahead) to make them. ``flush`` ends a segment, ``clear`` is an
interruption: queued audio is dropped and the idle motion continues without a jump.
``set_controls`` hands the driver the session's controls (emotion, gaze, distance): each driver
applies them its own way, so no caller branches on the driver's type.

The server and the offline renderer only ever talk to this protocol, so swapping the baseline
driver for the learned generator changes nothing around them.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from vivify.engines.motion.controls import Controls


@runtime_checkable
class MotionDriver(Protocol):
    """Streaming audio → motion, per session."""

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Feed audio; returns the (n, MOTION_DIM) float32 frames that became ready."""
        ...

    def flush(self) -> np.ndarray:
        """End of segment: emit the frames still waiting for lookahead (padding with silence)."""
        ...

    def clear(self) -> None:
        """Interruption: drop buffered audio; the next frames continue the idle motion."""
        ...

    def set_controls(self, controls: Controls) -> None:
        """The controls the frames made from now on follow (clamped by the driver)."""
        ...

    @property
    def latency_samples(self) -> int:
        """Audio samples a frame waits for beyond its own 40 ms (the algorithmic lookahead)."""
        ...


@runtime_checkable
class BatchableDriver(MotionDriver, Protocol):
    """A driver whose model calls a scheduler may batch across sessions (the learned one).

    ``add_audio`` queues audio without running the model; ``ready_request`` returns the next
    window's model inputs (or None) without advancing; ``accept`` takes the model's output for
    that window and returns the frames it shows (with the controls of ``set_controls``).
    """

    def add_audio(self, chunk: np.ndarray) -> None: ...

    def ready_request(self) -> Any: ...

    def accept(self, window: np.ndarray) -> np.ndarray: ...
