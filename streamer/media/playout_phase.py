"""Where in its 40 ms a live session's playout grid ticks: just after the pairs are made.

A caller's audio arrives on the caller's clock; the ticker plays slots on a 40 ms grid of its
own, started at an arbitrary moment. Each live pair is made when its audio is in (plus the
driver's lookahead and the render), then waits for its tick: up to 40 ms, 20 on average, added
to speech onset → mouth for the whole call. :class:`PlayoutPhase` watches how long live pairs
wait and moves the grid earlier until the shortest wait of the last second is ``margin``.

Too early costs more than it saves: when a live block comes after its slot's idle deadline,
the producer fills the slot with an idle (silent) pair and the speech slips a slot (40 ms
later, one silent frame in it). The producer reports that as :meth:`PlayoutPhase.late`; the
grid then moves back by ``backoff``, and a floor keeps it from moving that early again (the
floor creeps ``creep`` per second, so a caller whose clock runs fast is still followed).

Moves are spread over ticks, at most ``step`` each, so a frame interval shrinks or grows by a
few milliseconds (the receiver sees jitter, not a skipped frame); the pairs' timestamps do not
change. Only live sessions (a microphone) follow: an agent's stream is queued ahead on purpose.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from vivify.streamer.media.pairs import FRAME_SECONDS


@dataclass(frozen=True)
class PhaseConfig:
    margin: float = 0.018  # seconds a live pair should still wait for its tick
    window: int = 25  # live pairs observed before a move (1 s)
    step: float = 0.002  # seconds the grid moves at most per tick
    backoff: float = 0.010  # seconds the grid moves later when speech slipped a slot
    creep: float = 0.001  # seconds per second of live pairs the floor relaxes


class PlayoutPhase:
    """The shift of the playout grid, in seconds (negative: earlier than where it started)."""

    def __init__(self, config: PhaseConfig | None = None) -> None:
        self.config = config or PhaseConfig()
        self.offset = 0.0
        self.floor: float | None = None  # the earliest offset allowed (after a slip)
        self.slips = 0
        self._waits: deque[float] = deque(maxlen=self.config.window)
        self._to_move = 0.0  # decided, not applied yet

    def waited(self, seconds: float) -> None:
        """A live pair was played ``seconds`` after it was made."""
        cfg = self.config
        if self.floor is not None:
            self.floor -= cfg.creep * FRAME_SECONDS
        if self._to_move:
            return  # a move is under way: what is observed now predates it
        self._waits.append(seconds)
        if len(self._waits) == self._waits.maxlen:
            target = self.offset - (min(self._waits) - cfg.margin)
            if self.floor is not None:
                target = max(target, self.floor)
            if self.offset - target > cfg.step:
                self._to_move = target - self.offset
            self._waits.clear()

    def late(self) -> None:
        """Speech slipped a slot: its block came after the slot's idle deadline."""
        self.slips += 1
        self._waits.clear()
        self._to_move = max(self._to_move, 0.0) + self.config.backoff
        self.floor = self.offset + self._to_move

    def tick(self) -> float:
        """The grid's shift for the next tick (call once per tick)."""
        move = max(-self.config.step, min(self.config.step, self._to_move))
        self._to_move -= move
        if abs(self._to_move) < 1e-9:
            self._to_move = 0.0
        self.offset += move
        return self.offset
