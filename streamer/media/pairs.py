"""What a session plays: (frame, audio) pairs, one per 40 ms slot, and the queues that carry them.

The rule the whole media pipeline keeps: a pair carries its own audio, so video and audio can
only ever be late *together*.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import numpy as np

FPS = 25
FRAME_SECONDS = 1.0 / FPS
SUBSCRIBER_QUEUE = 8  # pairs a slow consumer may lag before its oldest are dropped


@dataclass(frozen=True)
class AVPair:
    """One video frame and the 40 ms of audio that belongs to it."""

    slot: int
    image: np.ndarray  # (S, S, 3) uint8 RGB
    audio: np.ndarray  # (640,) int16, 16 kHz mono
    live: bool  # carries pushed audio (not idle silence)
    arrived: float | None = None  # clock time the block's audio arrived (latency stats)


class Subscriber:
    """A consumer of played pairs (one per peer connection); drops its oldest when behind.

    ``None`` in a queue is the end of the stream.
    """

    def __init__(self, video: bool = True, audio: bool = True) -> None:
        self.video: asyncio.Queue[AVPair | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.audio: asyncio.Queue[AVPair | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._queues = [q for q, wanted in ((self.video, video), (self.audio, audio)) if wanted]
        # The slot both tracks count their timestamps from: shared, so that a queue that
        # dropped its oldest pair before being read cannot shift one track against the other.
        self.first_slot: int | None = None

    def origin(self, slot: int) -> int:
        if self.first_slot is None:
            self.first_slot = slot
        return self.first_slot

    def offer(self, pair: AVPair | None) -> None:
        for q in self._queues:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(pair)


class PairHub:
    """Where played pairs fan out: each pair :meth:`publish` gets goes to every subscriber (the
    peer's tracks, the broadcast encoders), and :meth:`end` ends all their streams at once."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()

    def subscribe(self, video: bool = True, audio: bool = True) -> Subscriber:
        """A new consumer of played pairs; ``video``/``audio`` pick the queues it reads."""
        sub = Subscriber(video, audio)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        sub.offer(None)

    def publish(self, pair: AVPair) -> None:
        for sub in list(self.subscribers):
            sub.offer(pair)

    def end(self) -> None:
        """Every subscriber's stream ends (``None``) and none is kept."""
        for sub in list(self.subscribers):
            sub.offer(None)
        self.subscribers.clear()
