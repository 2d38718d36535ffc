"""One session's media: audio in → motion → frames, paired with their audio, played at 25 fps.

Two tasks and one rule. The *producer* turns 40 ms audio blocks into (frame, audio) pairs on the
inference scheduler; the *ticker* is the one place that paces: every 40 ms of the injected clock
it plays slot ``n`` (the pair made for it, or a held frame with silence if generation is late)
and publishes it to every subscriber (the peer's tracks, broadcast viewers). The rule: a pair
carries its own audio, so video and audio can only ever be late *together*.

Bounded latency: the producer stays at most ``depth`` slots ahead of playback; a live microphone
whose audio piles up (jitter, a stall) is trimmed to the newest ``MAX_LIVE_BACKLOG``; when no
audio is there for a slot that is due, silence is fed to the driver so the face idles alive.
Late pairs are dropped, never played late.

Around it: :mod:`~vivify.streamer.media.pairs` (what is played), :mod:`~vivify.streamer.media.
audio_input` (the input FIFO), :mod:`~vivify.streamer.media.render_paths` (block → frames, chosen
once per session). The session's controls are handed to its driver before each block; the
driver applies them its own way (``MotionDriver.set_controls``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vivify.engines.audio.audio_io import SAMPLE_RATE, SAMPLES_PER_FRAME
from vivify.engines.motion.controls import Controls
from vivify.engines.motion.driver import MotionDriver
from vivify.engines.provenance.stamp import ProvenanceStamp
from vivify.engines.render.renderer import Renderer
from vivify.streamer.media.audio_input import AudioInput
from vivify.streamer.media.clock import Clock
from vivify.streamer.media.pairs import FRAME_SECONDS, AVPair, PairHub
from vivify.streamer.media.playout_phase import PlayoutPhase
from vivify.streamer.media.render_paths import (
    FrameDrawer,
    RenderPath,
    SharedEngines,
    choose_render_path,
)
from vivify.streamer.media.scheduler import InferenceScheduler

log = logging.getLogger(__name__)

MAX_LIVE_BACKLOG = 2 * SAMPLES_PER_FRAME  # live mic audio kept beyond what is being generated
IDLE_LEAD = 0  # see MediaConfig.idle_lead
# An idle pair for a slot is started this long before the slot is due, not as soon as the slot
# before it plays: live audio that comes in the meantime takes the slot instead. It must cover
# making one idle pair (driver + render, a few ms here); one that is late holds the last frame.
IDLE_DEADLINE = 0.015

Events = Callable[[dict[str, Any]], None]
Failure = Callable[[BaseException], None]


@dataclass(frozen=True)
class MediaConfig:
    """How one session's media plays (the server sets it from its own configuration)."""

    depth: int = 3  # slots the producer may run ahead of playback
    live: bool = True  # a live microphone (trim backlog) vs an agent's stream (queue it)
    max_buffer_seconds: float = 120.0  # an agent's stream queued at most (push_audio raises)
    # An idle frame is made only when at most this many slots beyond the next one are
    # queued. Each slot of margin is 40 ms more from speech onset to the mouth moving; 0
    # (idle made just for the next slot) was measured safe: virtual-clock probe with 30 ms
    # arrival jitter and 30 ms generation time inserted no silence into speech and
    # dropped no more pairs than margin 1 or 2, and loopback onset p50 fell ~285 → ~210 ms.
    idle_lead: int = IDLE_LEAD


@dataclass
class MediaStats:
    slots_played: int = 0
    late_slots: int = 0  # played as a held frame because generation was late
    dropped_pairs: int = 0  # generated too late to play
    trimmed_samples: int = 0  # live audio dropped to keep latency bounded
    live_slots: int = 0
    render_fallbacks: int = 0  # renderer-graph failures that moved this session to the CPU
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=250))

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.latency_ms)
        p50 = lat[len(lat) // 2] if lat else None
        return {"slots_played": self.slots_played, "late_slots": self.late_slots,
                "dropped_pairs": self.dropped_pairs, "trimmed_samples": self.trimmed_samples,
                "live_slots": self.live_slots, "render_fallbacks": self.render_fallbacks,
                "latency_ms_p50": round(p50, 1) if p50 is not None else None}


class SessionMedia(PairHub):
    """Produces and plays one avatar's pairs, published to its subscribers (:class:`PairHub`).
    ``start``/``aclose`` are safe to call twice.

    ``renderer`` draws the frames (and, on the renderer graph, supplies the idle image);
    ``stamp`` marks every frame this session shows (watermark, + label); ``shared`` are the
    server's cross-session engines, which decide the render path once, here.
    """

    def __init__(self, renderer: Renderer, driver: MotionDriver, scheduler: InferenceScheduler,
                 clock: Clock, config: MediaConfig | None = None, *,
                 stamp: ProvenanceStamp | None = None, shared: SharedEngines | None = None,
                 on_event: Events | None = None, on_failure: Failure | None = None) -> None:
        super().__init__()  # no subscribers yet
        self.config = config or MediaConfig()
        self.renderer = renderer
        self.driver = driver
        self.scheduler = scheduler
        self.clock = clock
        self.stamp = stamp
        self.controls = Controls()
        self.stats = MediaStats()
        self.path: RenderPath = choose_render_path(driver, FrameDrawer(renderer, stamp),
                                                   scheduler, shared or SharedEngines(),
                                                   self._render_fallback)
        self._on_event: Events = lambda _e: None
        # Called once if the producer or the ticker dies of an error (an engine that keeps
        # failing, a bug): the session is then closed rather than left frozen on a frame.
        self._on_failure: Failure | None = None
        self.listen(on_event, on_failure)
        self._max_buffer = int(self.config.max_buffer_seconds * SAMPLE_RATE)
        self._input = AudioInput()
        self._pending: deque[tuple[np.ndarray, bool, float | None]] = deque()  # blocks in driver
        self._ready: dict[int, AVPair] = {}
        self._made: dict[int, float] = {}  # slot → clock time its pair was made
        self.phase = PlayoutPhase()  # a live session's grid follows its pairs (playout_phase)
        self._grid_start: float | None = None  # clock time of slot 0 (before phase moves)
        self._idle_run = 0  # idle blocks fed since the last live one
        self._heard_live = False  # a live block was fed since the start or an interrupt
        self._produced = 0  # next slot the producer will fill
        self._playing = 0  # next slot the ticker will play
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_image = stamp.apply(renderer.pack.crop) if stamp else renderer.pack.crop
        self._segment_open = False
        self._segment_played = 0  # live samples played in the current segment
        self._segment_ended = False
        self._segment_padding = 0  # silence added to complete the segment's last block
        self._epoch = 0  # bumped by interrupt: work started before it is discarded

    @property
    def depth(self) -> int:
        return self.config.depth

    @property
    def live(self) -> bool:
        return self.config.live

    def listen(self, on_event: Events | None = None, on_failure: Failure | None = None) -> None:
        """Who hears this media's events (``playback_started``...) and its failure: bound
        after construction by the owner that holds the media (a server session)."""
        if on_event is not None:
            self._on_event = on_event
        if on_failure is not None:
            self._on_failure = on_failure

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [asyncio.create_task(self._produce(), name="media-producer"),
                       asyncio.create_task(self._tick(), name="media-ticker")]
        for task in self._tasks:
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        assert exc is not None
        log.error("session media %s failed: %r", task.get_name(), exc)
        callback, self._on_failure = self._on_failure, None  # once, for the first failure
        if callback is not None:
            callback(exc)

    async def aclose(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.end()
        self.path.close()  # nothing of this session is in flight any more

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    # ------------------------------------------------------------------ inputs
    def push_audio(self, samples: np.ndarray) -> None:
        """Queue 16 kHz mono float32 audio. Raises ``OverflowError`` past the buffer limit."""
        if samples.size == 0:
            return
        if not self.live and self._input.queued + samples.size > self._max_buffer:
            raise OverflowError(
                f"audio buffer full ({self._max_buffer / SAMPLE_RATE:.0f} s queued); "
                "wait for playback_finished before sending more")
        self._input.append(samples, self.clock.now())
        if not self._segment_open:
            self._segment_open, self._segment_ended, self._segment_played = True, False, 0
            self._segment_padding = 0
        if self.live and self._input.queued > MAX_LIVE_BACKLOG:
            self._drop_input(self._input.queued - MAX_LIVE_BACKLOG)
        self._wake.set()

    def segment_end(self) -> None:
        """The agent finished a segment: report ``playback_finished`` once it has played.

        A segment rarely ends on a 40 ms boundary; its last partial block is completed with
        silence so it plays now (it used to wait for the next segment's audio, and be counted
        in that one), and the padding is left out of the reported position.
        """
        if self._segment_open and not self._segment_ended:
            pad = self._input.pad_to_block()
            if pad:
                self._segment_padding = pad
                self._wake.set()
            self._segment_ended = True
            self._maybe_finish()

    def interrupt(self) -> None:
        """Drop queued audio and unplayed pairs; the face returns to idle in a frame or two."""
        was_open = self._segment_open
        position = self._segment_played * 1000 // SAMPLE_RATE
        self._drop_input(self._input.queued)
        self._ready.clear()
        self._made.clear()
        self._epoch += 1  # the producer clears the driver between steps, never during one
        self._produced = self._playing
        self._segment_open = self._segment_ended = False
        if was_open:
            self._on_event({"type": "playback_finished", "position_ms": position,
                            "interrupted": True})
        self._wake.set()

    # ------------------------------------------------------------------ internals
    def _drop_input(self, n: int) -> None:
        dropped = self._input.drop(n)
        if self.live:
            self.stats.trimmed_samples += dropped

    def _render_fallback(self, exc: BaseException) -> None:
        """The renderer graph failed: the path renders on the CPU from now on."""
        self.stats.render_fallbacks += 1
        self._on_event({"type": "renderer_fallback", "reason": str(exc)[:200]})

    async def _advance(self, block: np.ndarray) -> list[np.ndarray]:
        """One 40 ms block through the driver (with the current controls) and the renderer."""
        self.driver.set_controls(self.controls)
        return await self.path.advance(block)

    async def _produce(self) -> None:
        silence = np.zeros(SAMPLES_PER_FRAME, np.float32)
        lookahead_blocks = -(-self.driver.latency_samples // SAMPLES_PER_FRAME)
        epoch = self._epoch
        while True:
            if epoch != self._epoch:  # interrupted: forget the driver's audio, start afresh
                epoch = self._epoch
                self._pending.clear()
                self.driver.clear()
                # Prime the driver's lookahead with silence in one step, so the very next slot
                # already shows the face going idle instead of holding the speaking frame.
                self._heard_live = False
                for _ in range(lookahead_blocks):
                    self._pending.append((silence, False, None))
                    early = await self.scheduler.run(functools.partial(self.driver.push, silence))
                    for _ in range(len(early)):  # none expected; keep blocks and frames paired
                        self._pending.popleft()
            if self._produced >= self._playing + self.depth:
                self._wake.clear()
                await self._wake.wait()
                continue
            urgent = self._produced <= self._playing + self.config.idle_lead
            if self._input.queued >= SAMPLES_PER_FRAME:
                block, arrived = self._input.take_block()
                live = True
                if self.live and self._heard_live and 0 < self._idle_run <= 2:
                    self.phase.late()  # an idle pair filled a slot this speech needed
                self._idle_run, self._heard_live = 0, True
            elif urgent and (wait := self._until_idle_deadline()) > 0:
                await self._sleep_or_wake(wait)
                continue
            elif urgent:
                block, arrived, live = silence, None, False
                self._idle_run += 1
            else:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._pending.append((block, live, arrived))
            images = await self._advance(block)
            if epoch != self._epoch:
                continue  # an interrupt happened meanwhile: this work is void
            for image in images:
                blk, blk_live, blk_arrived = self._pending.popleft()
                pcm = np.clip(blk * 32767.0, -32768, 32767).astype(np.int16)
                if self._produced < self._playing:  # too late to play: skip ahead
                    self.stats.dropped_pairs += self._playing - self._produced
                    self._produced = self._playing
                    if blk_live and self.live:
                        self.phase.late()
                self._ready[self._produced] = AVPair(self._produced, image, pcm, blk_live,
                                                     blk_arrived)
                self._made[self._produced] = self.clock.now()
                self._produced += 1

    def _until_idle_deadline(self) -> float:
        """Seconds until an idle pair must be started for the next slot to be filled."""
        if self._grid_start is None:
            return 0.0
        due = self._grid_start + self.phase.offset + self._produced * FRAME_SECONDS
        return due - IDLE_DEADLINE - self.clock.now()

    async def _sleep_or_wake(self, seconds: float) -> None:
        """Wait ``seconds`` of the clock, or less if audio comes or a slot plays."""
        self._wake.clear()
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()

    async def _tick(self) -> None:
        start = self._grid_start = self.clock.now()
        slot = 0
        silence = np.zeros(SAMPLES_PER_FRAME, np.int16)
        while True:
            origin = start + (self.phase.tick() if self.live else 0.0)
            due = origin + slot * FRAME_SECONDS
            await self.clock.sleep(due - self.clock.now())
            behind = math.floor((self.clock.now() - origin) / FRAME_SECONDS) - slot
            if behind > 1:  # the loop stalled: skip the slots whose time has passed
                self.stats.late_slots += behind
                slot += behind
            pair = self._ready.pop(slot, None)
            made = self._made.pop(slot, None)
            for stale in [s for s in self._ready if s < slot]:
                del self._ready[stale]
                self._made.pop(stale, None)
                self.stats.dropped_pairs += 1
            if pair is not None and pair.live and self.live and made is not None:
                self.phase.waited(self.clock.now() - made)
            if pair is None:
                pair = AVPair(slot, self._last_image, silence, False)
                self.stats.late_slots += 1 if slot > self.depth else 0
            self._last_image = pair.image
            self._playing = slot + 1
            self._account(pair)
            self.publish(pair)
            self._wake.set()
            slot += 1

    def _account(self, pair: AVPair) -> None:
        self.stats.slots_played += 1
        if not pair.live:
            self._maybe_finish()
            return
        self.stats.live_slots += 1
        if pair.arrived is not None:
            self.stats.latency_ms.append((self.clock.now() - pair.arrived) * 1000)
        if self._segment_played == 0:
            self._on_event({"type": "playback_started"})
        self._segment_played += SAMPLES_PER_FRAME
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if (self._segment_open and self._segment_ended
                and self._input.queued < SAMPLES_PER_FRAME
                and not any(p.live for p in self._ready.values())
                and not any(live for _, live, _ in self._pending)):
            self._segment_open = self._segment_ended = False
            played = self._segment_played - self._segment_padding
            self._on_event({"type": "playback_finished",
                            "position_ms": played * 1000 // SAMPLE_RATE,
                            "interrupted": False})

