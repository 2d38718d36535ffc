"""Seconds since a received stream's first frame: the media clock of every client."""

from __future__ import annotations

import fractions

RTP_WRAP = 1 << 32


class MediaTimeline:
    """Seconds since a stream's first frame, from its pts and time_base.

    The pts of received frames are RTP timestamps (random 32-bit origin), so they are unwrapped
    modulo 2³² before subtracting the first one.
    """

    def __init__(self) -> None:
        self._first: int | None = None
        self._last_raw = 0
        self._unwrapped = 0

    def seconds(self, pts: int, time_base: fractions.Fraction) -> float:
        if self._first is None:
            self._first = self._unwrapped = self._last_raw = pts
        else:
            step = (pts - self._last_raw) % RTP_WRAP
            if step >= RTP_WRAP // 2:
                step -= RTP_WRAP  # a small step back (reordering), not a wrap
            self._unwrapped += step
            self._last_raw = pts
        return float((self._unwrapped - self._first) * time_base)

