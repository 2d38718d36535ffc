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
from vivify.engines.motion.driver import BatchableDriver, MotionDriver
from vivify.engines.motion.vector import (
    EMOTIONS,
    INDEX,
    MOTION_DIM,
    clip_motion,
    emotion_offset,
    finite_clip,
)
from vivify.engines.provenance.stamp import ProvenanceStamp
from vivify.engines.render.graph_renderer import RenderRequest
from vivify.engines.render.renderer import Renderer
from vivify.streamer.media.batcher import WindowBatcher
from vivify.streamer.media.clock import Clock
from vivify.streamer.media.scheduler import InferenceScheduler

log = logging.getLogger(__name__)

FPS = 25
FRAME_SECONDS = 1.0 / FPS
MAX_LIVE_BACKLOG = 2 * SAMPLES_PER_FRAME  # live mic audio kept beyond what is being generated
IDLE_LEAD = 0  # see SessionMedia.idle_lead
SUBSCRIBER_QUEUE = 8  # pairs a slow consumer may lag before its oldest are dropped
GAZE_GAIN = 1.0
DISTANCE_GAIN = 1.0

Events = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class AVPair:
    """One video frame and the 40 ms of audio that belongs to it."""

    slot: int
    image: np.ndarray  # (S, S, 3) uint8 RGB
    audio: np.ndarray  # (640,) int16, 16 kHz mono
    live: bool  # carries pushed audio (not idle silence)
    arrived: float | None = None  # clock time the block's audio arrived (latency stats)


@dataclass
class Controls:
    """VASA-1 style optional signals, applied on top of whatever the driver produces.

    The API validates every value at its edge; the engine clamps them again here (finite,
    within range) so no caller — the API, a plugin, a test — can hand OpenCV or an ONNX graph
    a NaN or an infinity.
    """

    emotion: str = "neutral"
    intensity: float = 1.0
    gaze: tuple[float, float] | None = None
    distance: float = 0.0  # -1 far .. 1 near

    def _clamped(self) -> tuple[str, float, tuple[float, float], float]:
        emotion = self.emotion if self.emotion in EMOTIONS else "neutral"
        intensity = finite_clip(self.intensity, 0.0, 1.0, 1.0)
        gx, gy = self.gaze if self.gaze is not None else (0.0, 0.0)
        gaze = (finite_clip(gx, -1.0, 1.0, 0.0), finite_clip(gy, -1.0, 1.0, 0.0))
        return emotion, intensity, gaze, finite_clip(self.distance, -1.0, 1.0, 0.0)

    def offset(self) -> np.ndarray:
        emotion, intensity, gaze, distance = self._clamped()
        vec = emotion_offset(emotion, intensity)
        vec[INDEX["gaze_x"]] += GAZE_GAIN * gaze[0]
        vec[INDEX["gaze_y"]] += GAZE_GAIN * gaze[1]
        vec[INDEX["head_scale"]] += DISTANCE_GAIN * distance
        return vec

    def model_input(self) -> np.ndarray:
        """The same signals as the learned generator's control input, which it follows itself
        (no offset is added to its motion)."""
        from vivify.engines.motion.generator import control_vector

        emotion, intensity, gaze, distance = self._clamped()
        return control_vector(gaze, distance, emotion, intensity)


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


class Subscriber:
    """A consumer of played pairs (one per peer connection); drops its oldest when behind."""

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


class SessionMedia:
    """Produces and plays one avatar's pairs. ``start``/``aclose`` are safe to call twice."""

    def __init__(self, renderer: Renderer, driver: MotionDriver, scheduler: InferenceScheduler,
                 clock: Clock, depth: int = 3, live: bool = True,
                 on_event: Events | None = None, max_buffer_seconds: float = 120.0,
                 stamp: ProvenanceStamp | None = None,
                 batcher: WindowBatcher | None = None,
                 render_batcher: WindowBatcher | None = None, render_key: str = "",
                 on_failure: Callable[[BaseException], None] | None = None) -> None:
        self.renderer = renderer
        # Called once if the producer or the ticker dies of an error (an engine that keeps
        # failing, a bug): the session is then closed rather than left frozen on a frame.
        self._on_failure = on_failure
        self.stamp = stamp  # watermark (+ label): applied to every frame this session shows
        # The learned generator's windows go through the shared batcher (one engine call for
        # all sessions); any other driver runs inside this session's worker step.
        self.batcher = batcher if isinstance(driver, BatchableDriver) else None
        # With the renderer graph (``vivify serve --renderer graph``) this session's frames go
        # through a second shared batcher, one graph call for the frames of every session;
        # ``renderer`` then only supplies the idle image. ``render_key`` names the avatar in
        # the graph's bank.
        self.render_batcher = render_batcher
        self.render_key = render_key
        self.driver = driver
        self.scheduler = scheduler
        self.clock = clock
        self.depth = depth
        # An idle frame is made only when at most this many slots beyond the next one are
        # queued. Each slot of margin is 40 ms more from speech onset to the mouth moving; 0
        # (idle made just for the next slot) was measured safe: virtual-clock probe with 30 ms
        # arrival jitter and 30 ms generation time inserted no silence into speech and
        # dropped no more pairs than margin 1 or 2, and loopback onset p50 fell ~285 → ~210 ms.
        self.idle_lead = IDLE_LEAD
        self.live = live  # a live microphone (trim backlog) vs an agent's stream (queue it)
        self.controls = Controls()
        self.stats = MediaStats()
        self._on_event = on_event or (lambda _e: None)
        self._max_buffer = int(max_buffer_seconds * SAMPLE_RATE)
        self._input: deque[np.ndarray] = deque()  # float32 chunks not yet cut into blocks
        self._input_len = 0
        self._arrivals: deque[tuple[int, float]] = deque()  # (input sample index, clock time)
        self._input_consumed = 0
        self._pending: deque[tuple[np.ndarray, bool, float | None]] = deque()  # blocks in driver
        self._ready: dict[int, AVPair] = {}
        self._produced = 0  # next slot the producer will fill
        self._playing = 0  # next slot the ticker will play
        self._subscribers: set[Subscriber] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_image = stamp.apply(renderer.pack.crop) if stamp else renderer.pack.crop
        self._segment_open = False
        self._segment_played = 0  # live samples played in the current segment
        self._segment_ended = False
        self._segment_padding = 0  # silence added to complete the segment's last block
        self._epoch = 0  # bumped by interrupt: work started before it is discarded

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
        for sub in list(self._subscribers):
            sub.offer(None)
        self._subscribers.clear()

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    # ------------------------------------------------------------------ inputs
    def subscribe(self, video: bool = True, audio: bool = True) -> Subscriber:
        """A new consumer of played pairs; ``video``/``audio`` pick the queues it reads."""
        sub = Subscriber(video, audio)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)
        sub.offer(None)

    def push_audio(self, samples: np.ndarray) -> None:
        """Queue 16 kHz mono float32 audio. Raises ``OverflowError`` past the buffer limit."""
        if samples.size == 0:
            return
        if not self.live and self._input_len + samples.size > self._max_buffer:
            raise OverflowError(
                f"audio buffer full ({self._max_buffer / SAMPLE_RATE:.0f} s queued); "
                "wait for playback_finished before sending more")
        self._arrivals.append((self._input_consumed + self._input_len, self.clock.now()))
        self._input.append(samples.astype(np.float32, copy=False))
        self._input_len += samples.size
        if not self._segment_open:
            self._segment_open, self._segment_ended, self._segment_played = True, False, 0
            self._segment_padding = 0
        if self.live and self._input_len > MAX_LIVE_BACKLOG:
            self._drop_input(self._input_len - MAX_LIVE_BACKLOG)
        self._wake.set()

    def segment_end(self) -> None:
        """The agent finished a segment: report ``playback_finished`` once it has played.

        A segment rarely ends on a 40 ms boundary; its last partial block is completed with
        silence so it plays now (it used to wait for the next segment's audio, and be counted
        in that one), and the padding is left out of the reported position.
        """
        if self._segment_open and not self._segment_ended:
            tail = self._input_len % SAMPLES_PER_FRAME
            if tail:
                pad = SAMPLES_PER_FRAME - tail
                self._input.append(np.zeros(pad, np.float32))
                self._input_len += pad
                self._segment_padding = pad
                self._wake.set()
            self._segment_ended = True
            self._maybe_finish()

    def interrupt(self) -> None:
        """Drop queued audio and unplayed pairs; the face returns to idle in a frame or two."""
        was_open = self._segment_open
        position = self._segment_played * 1000 // SAMPLE_RATE
        self._drop_input(self._input_len)
        self._ready.clear()
        self._epoch += 1  # the producer clears the driver between steps, never during one
        self._produced = self._playing
        self._segment_open = self._segment_ended = False
        if was_open:
            self._on_event({"type": "playback_finished", "position_ms": position,
                            "interrupted": True})
        self._wake.set()

    # ------------------------------------------------------------------ internals
    def _drop_input(self, n: int) -> None:
        while n > 0 and self._input:
            head = self._input[0]
            if head.size <= n:
                self._input.popleft()
                n -= head.size
                self._input_len -= head.size
                self._input_consumed += head.size
                if self.live:
                    self.stats.trimmed_samples += head.size
            else:
                self._input[0] = head[n:]
                self._input_len -= n
                self._input_consumed += n
                if self.live:
                    self.stats.trimmed_samples += n
                n = 0
        while self._arrivals and self._arrivals[0][0] < self._input_consumed - SAMPLE_RATE:
            self._arrivals.popleft()

    def _take_block(self) -> tuple[np.ndarray, float | None]:
        """The next 640 samples of input, with the time its first sample arrived."""
        out = np.empty(SAMPLES_PER_FRAME, np.float32)
        start = self._input_consumed
        filled = 0
        while filled < SAMPLES_PER_FRAME:
            head = self._input[0]
            take = min(head.size, SAMPLES_PER_FRAME - filled)
            out[filled:filled + take] = head[:take]
            filled += take
            if take == head.size:
                self._input.popleft()
            else:
                self._input[0] = head[take:]
        self._input_len -= SAMPLES_PER_FRAME
        self._input_consumed += SAMPLES_PER_FRAME
        arrived = None
        while self._arrivals and self._arrivals[0][0] <= start:
            arrived = self._arrivals.popleft()[1]
        if arrived is None and self._arrivals:
            arrived = self._arrivals[0][1]
        return out, arrived

    def _step(self, block: np.ndarray, offset: np.ndarray) -> list[np.ndarray]:
        """Worker thread: driver + renderer for one block; the images of the frames it made.

        Only the driver and renderer are touched here; all bookkeeping stays on the loop, and
        the producer never has two steps of one session in flight.
        """
        return self._render(self.driver.push(block), offset)

    def _render(self, motions: np.ndarray, offset: np.ndarray) -> list[np.ndarray]:
        """Worker thread: motion frames → stamped images."""
        images = [self.renderer.render(clip_motion(m + offset)).image for m in motions]
        if self.stamp is not None:
            images = [self.stamp.apply(im, inplace=True) for im in images]
        return images

    async def _advance(self, block: np.ndarray) -> list[np.ndarray]:
        """One 40 ms block through the driver and the renderer (off the loop)."""
        offset = self._control_inputs()
        if self.batcher is None and self.render_batcher is None:  # one worker hop for both
            return list(await self.scheduler.run(functools.partial(self._step, block, offset)))
        motions = await self._motions(block)
        if not len(motions):
            return []
        if self.render_batcher is not None:
            batcher = self.render_batcher
            try:
                return list(await asyncio.gather(*(
                    batcher.infer(RenderRequest(self.render_key, clip_motion(m + offset),
                                                self.stamp))
                    for m in motions)))
            except Exception as exc:  # the graph's engine failed (GPU out of memory, lost device)
                # The session goes on, on the CPU renderer, rather than freezing on its last frame.
                log.warning("renderer graph failed (%s): this session renders on the CPU now", exc)
                self.render_batcher = None
                self.stats.render_fallbacks += 1
                self._on_event({"type": "renderer_fallback", "reason": str(exc)[:200]})
        return list(await self.scheduler.run(functools.partial(self._render, motions, offset)))

    async def _motions(self, block: np.ndarray) -> np.ndarray:
        """The motion frames ``block`` completes: through the shared generator batcher, or
        the session's own driver on a worker."""
        driver = self.driver
        if self.batcher is None or not isinstance(driver, BatchableDriver):
            return np.asarray(await self.scheduler.run(functools.partial(driver.push, block)))
        driver.add_audio(block)
        motions = []
        while (request := driver.ready_request()) is not None:
            motions.append(driver.accept(await self.batcher.infer(request)))
        return np.concatenate(motions) if motions else np.zeros((0, MOTION_DIM), np.float32)

    def _control_inputs(self) -> np.ndarray:
        """The offset added to the driver's motion. A model that takes the controls as input
        (the learned generator) gets them there instead, and the offset is zero."""
        if isinstance(self.driver, BatchableDriver):
            self.driver.controls = self.controls.model_input()
            return np.zeros(MOTION_DIM, np.float32)
        return self.controls.offset()

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
                for _ in range(lookahead_blocks):
                    self._pending.append((silence, False, None))
                    early = await self.scheduler.run(functools.partial(self.driver.push, silence))
                    for _ in range(len(early)):  # none expected; keep blocks and frames paired
                        self._pending.popleft()
            if self._produced >= self._playing + self.depth:
                self._wake.clear()
                await self._wake.wait()
                continue
            urgent = self._produced <= self._playing + self.idle_lead
            if self._input_len >= SAMPLES_PER_FRAME:
                block, arrived = self._take_block()
                live = True
            elif urgent:
                block, arrived, live = silence, None, False
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
                self._ready[self._produced] = AVPair(self._produced, image, pcm, blk_live,
                                                     blk_arrived)
                self._produced += 1

    async def _tick(self) -> None:
        start = self.clock.now()
        slot = 0
        silence = np.zeros(SAMPLES_PER_FRAME, np.int16)
        while True:
            due = start + slot * FRAME_SECONDS
            await self.clock.sleep(due - self.clock.now())
            behind = math.floor((self.clock.now() - start) / FRAME_SECONDS) - slot
            if behind > 1:  # the loop stalled: skip the slots whose time has passed
                self.stats.late_slots += behind
                slot += behind
            pair = self._ready.pop(slot, None)
            for stale in [s for s in self._ready if s < slot]:
                del self._ready[stale]
                self.stats.dropped_pairs += 1
            if pair is None:
                pair = AVPair(slot, self._last_image, silence, False)
                self.stats.late_slots += 1 if slot > self.depth else 0
            self._last_image = pair.image
            self._playing = slot + 1
            self._account(pair)
            for sub in list(self._subscribers):
                sub.offer(pair)
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
        if (self._segment_open and self._segment_ended and self._input_len < SAMPLES_PER_FRAME
                and not any(p.live for p in self._ready.values())
                and not any(live for _, live, _ in self._pending)):
            self._segment_open = self._segment_ended = False
            played = self._segment_played - self._segment_padding
            self._on_event({"type": "playback_finished",
                            "position_ms": played * 1000 // SAMPLE_RATE,
                            "interrupted": False})


def motion_dim_check() -> None:
    """Import-time guard: the controls assume the 19-dim rig-1 contract."""
    if MOTION_DIM != 19:
        raise RuntimeError("vivify.streamer.media.session_media was written for the 19-dim "
                           "motion contract")


motion_dim_check()
