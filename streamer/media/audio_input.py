"""A session's pushed audio, not yet cut into 40 ms blocks, with the time each chunk arrived."""

from __future__ import annotations

from collections import deque

import numpy as np

from vivify.engines.audio.audio_io import SAMPLE_RATE, SAMPLES_PER_FRAME


class AudioInput:
    """A FIFO of 16 kHz mono float32 chunks, read 640 samples (one block) at a time.

    Arrival times are kept per chunk so a block can say when its first sample came in (the
    latency statistics measure from there).
    """

    def __init__(self) -> None:
        self._chunks: deque[np.ndarray] = deque()
        self.queued = 0  # samples in the FIFO
        self._consumed = 0  # samples taken or dropped so far (index of the FIFO's head)
        self._arrivals: deque[tuple[int, float]] = deque()  # (input sample index, clock time)

    def append(self, samples: np.ndarray, now: float) -> None:
        self._arrivals.append((self._consumed + self.queued, now))
        self._chunks.append(samples.astype(np.float32, copy=False))
        self.queued += samples.size

    def pad_to_block(self) -> int:
        """Complete a partial last block with silence; the samples of padding added."""
        tail = self.queued % SAMPLES_PER_FRAME
        if not tail:
            return 0
        pad = SAMPLES_PER_FRAME - tail
        self._chunks.append(np.zeros(pad, np.float32))
        self.queued += pad
        return pad

    def drop(self, n: int) -> int:
        """Drop up to ``n`` of the oldest samples; the number dropped."""
        dropped = 0
        while n > 0 and self._chunks:
            head = self._chunks[0]
            if head.size <= n:
                self._chunks.popleft()
                take = head.size
            else:
                self._chunks[0] = head[n:]
                take = n
            n -= take
            dropped += take
        self.queued -= dropped
        self._consumed += dropped
        while self._arrivals and self._arrivals[0][0] < self._consumed - SAMPLE_RATE:
            self._arrivals.popleft()
        return dropped

    def take_block(self) -> tuple[np.ndarray, float | None]:
        """The next 640 samples (there must be that many), with the time the first arrived."""
        out = np.empty(SAMPLES_PER_FRAME, np.float32)
        start = self._consumed
        filled = 0
        while filled < SAMPLES_PER_FRAME:
            head = self._chunks[0]
            take = min(head.size, SAMPLES_PER_FRAME - filled)
            out[filled:filled + take] = head[:take]
            filled += take
            if take == head.size:
                self._chunks.popleft()
            else:
                self._chunks[0] = head[take:]
        self.queued -= SAMPLES_PER_FRAME
        self._consumed += SAMPLES_PER_FRAME
        arrived = None
        while self._arrivals and self._arrivals[0][0] <= start:
            arrived = self._arrivals.popleft()[1]
        if arrived is None and self._arrivals:
            arrived = self._arrivals[0][1]
        return out, arrived
