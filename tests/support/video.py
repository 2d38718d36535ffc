"""Measures on the frames a client received."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

# The mouth of the default avatar in its 512² crop (rows, columns): where speech shows.
MOUTH_ROWS = slice(290, 380)
MOUTH_COLS = slice(190, 320)


def mouth_activity(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Mean absolute frame-to-frame change in the mouth region of the default avatar crop
    (RGB frames, 512²): near 0 for an idle face, a few units per frame while it speaks."""
    region = [f[MOUTH_ROWS, MOUTH_COLS].astype(np.float32) for f in frames]
    return np.array([np.abs(b - a).mean() for a, b in itertools.pairwise(region)])
