"""One session's media pipeline on virtual time: pairing, idle life, interrupt, bounded latency."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from vivify.engines.audio.audio_io import SAMPLES_PER_FRAME
from vivify.engines.motion.baseline import BaselineConfig, BaselineDriver
from vivify.streamer.media.clock import VirtualClock
from vivify.streamer.media.pairs import AVPair
from vivify.streamer.media.playout_phase import PhaseConfig, PlayoutPhase
from vivify.streamer.media.render_paths import GraphSlot, SharedEngines
from vivify.streamer.media.session_media import MAX_LIVE_BACKLOG, MediaConfig, SessionMedia


class InlineScheduler:
    """Runs each job at once on the loop; ``delay`` makes generation take virtual time."""

    def __init__(self, clock: VirtualClock, delay: float = 0.0) -> None:
        self.clock = clock
        self.delay = delay

    async def run(self, fn: Callable[[], Any]) -> Any:
        if self.delay:
            await self.clock.sleep(self.delay)
        return fn()


def _speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    env = (np.sin(2 * np.pi * 3 * t) > 0).astype(np.float32)
    return (0.3 * np.sin(2 * np.pi * 180 * t) * env + 0.01 * rng.normal(size=n)).astype(
        np.float32)


def _segment(audio: np.ndarray) -> Callable[[SessionMedia], None]:
    """A setup/action that pushes ``audio`` as one whole segment (an agent's utterance)."""
    def push(media: SessionMedia) -> None:
        media.push_audio(audio)
        media.segment_end()
    return push


def _run(renderer, seconds: float, live: bool, setup: Callable[[SessionMedia], Any] | None = None,
         delay: float = 0.0, actions: list[tuple[float, Callable[[SessionMedia], Any]]] | None
         = None, stamp: Any = None, render_batcher: Any = None, render_key: str = "default",
         driver: Any = None) -> tuple[list[AVPair], list[dict[str, Any]], SessionMedia]:
    """Play ``seconds`` of virtual time; with ``render_batcher``, frames go through it."""
    async def scenario() -> tuple[list[AVPair], list[dict[str, Any]], SessionMedia]:
        clock = VirtualClock()
        events: list[dict[str, Any]] = []
        graph = GraphSlot(render_batcher, render_key) if render_batcher is not None else None
        media = SessionMedia(renderer, driver or BaselineDriver(BaselineConfig()),
                             InlineScheduler(clock, delay), clock,  # type: ignore[arg-type]
                             MediaConfig(depth=3, live=live), stamp=stamp,
                             shared=SharedEngines(graph=graph), on_event=events.append)
        sub = media.subscribe()
        played: list[AVPair] = []

        async def collect() -> None:
            while (pair := await sub.video.get()) is not None:
                played.append(pair)

        collector = asyncio.create_task(collect())
        media.start()
        if setup:
            setup(media)
        elapsed = 0.0
        for at, action in sorted(actions or [], key=lambda a: a[0]):
            await clock.advance(at - elapsed)
            elapsed = at
            action(media)
        await clock.advance(seconds - elapsed)
        await media.aclose()
        await collector
        return played, events, media

    return asyncio.run(scenario())


@pytest.fixture(scope="module")
def played_speech(renderer):
    audio = _speech_like(2.0)
    return audio, _run(renderer, 3.5, live=False, setup=_segment(audio))


def test_every_frame_carries_its_own_audio(played_speech) -> None:
    audio, (played, _events, media) = played_speech
    slots = [p.slot for p in played]
    assert slots == list(range(slots[0], slots[0] + len(slots)))  # paced, no gaps
    live = [p for p in played if p.live]
    assert len(live) == len(audio) // SAMPLES_PER_FRAME
    sent = np.clip(audio[:len(live) * SAMPLES_PER_FRAME] * 32767, -32768, 32767).astype(np.int16)
    np.testing.assert_array_equal(np.concatenate([p.audio for p in live]), sent)
    assert media.stats.late_slots == 0 and media.stats.dropped_pairs == 0


def test_playback_events(played_speech) -> None:
    audio, (_, events, _) = played_speech
    assert [e["type"] for e in events] == ["playback_started", "playback_finished"]
    assert events[1]["interrupted"] is False
    assert events[1]["position_ms"] == len(audio) // SAMPLES_PER_FRAME * 40


def test_a_segment_that_ends_mid_block_plays_whole_and_alone(renderer) -> None:
    """16 100 samples are 25 blocks and 100 samples: the tail plays with its segment (padded
    with silence), not at the start of the next one, and each position is exact."""
    first, second = _speech_like(16100 / 16000, seed=1), _speech_like(0.4, seed=2)
    played, events, _ = _run(renderer, 3.0, live=False,
                             setup=_segment(first), actions=[(1.6, _segment(second))])
    finished = [e for e in events if e["type"] == "playback_finished"]
    assert [e["position_ms"] for e in finished] == [1006, 400]
    live = [p for p in played if p.live]
    assert len(live) == 26 + 10
    tail = live[25].audio
    sent = np.clip(first[16000:] * 32767, -32768, 32767).astype(np.int16)
    np.testing.assert_array_equal(tail[:100], sent)
    assert not tail[100:].any()  # silence after the segment's last sample


def test_silence_idles_alive(renderer) -> None:
    played, events, _media = _run(renderer, 6.0, live=True)
    assert len(played) >= 140 and not any(p.live for p in played)
    images = np.stack([p.image for p in played[::5]]).astype(np.float32)
    assert np.abs(np.diff(images, axis=0)).mean(axis=(1, 2, 3)).min() > 0.05  # never frozen
    assert events == []


def _learned() -> Any:
    from vivify.engines.motion.generator import GeneratorRunner, MotionGenerator

    return MotionGenerator(GeneratorRunner(), seed=0)


@pytest.mark.parametrize("learned", [False, True], ids=["baseline", "learned"])
def test_interrupt_returns_to_idle_within_100ms(renderer, learned: bool) -> None:
    audio = _speech_like(4.0)
    played, events, _ = _run(renderer, 2.0, live=False, setup=lambda m: m.push_audio(audio),
                             actions=[(1.0, lambda m: m.interrupt())],
                             driver=_learned() if learned else None)
    assert events[-1]["type"] == "playback_finished" and events[-1]["interrupted"] is True
    interrupt_slot = 1.0 / 0.04
    late_live = [p.slot for p in played if p.live and p.slot > interrupt_slot + 2.5]
    assert late_live == []  # at most 100 ms (2.5 slots) of old speech after the interrupt
    assert any(p.live for p in played if p.slot < interrupt_slot)


def test_live_backlog_is_trimmed_to_keep_latency_bounded(renderer) -> None:
    audio = _speech_like(3.0)
    played, _, media = _run(renderer, 1.0, live=True, setup=lambda m: m.push_audio(audio))
    assert media.stats.trimmed_samples >= len(audio) - MAX_LIVE_BACKLOG - SAMPLES_PER_FRAME
    assert sum(p.live for p in played) <= MAX_LIVE_BACKLOG // SAMPLES_PER_FRAME + 1


def test_slow_generation_drops_work_instead_of_growing_latency(renderer) -> None:
    audio = _speech_like(6.0)
    played, _, media = _run(renderer, 4.0, live=False, setup=lambda m: m.push_audio(audio),
                            delay=0.06)
    slots = [p.slot for p in played]
    assert slots == sorted(slots) and len(slots) >= 95  # the ticker kept 25 fps
    assert media.stats.late_slots > 10  # held frames while generation lagged
    assert media._produced - media._playing <= media.depth  # no growing backlog of frames


class BrokenDriver(BaselineDriver):
    """A driver that fails after a few blocks (an engine that keeps failing, a bug)."""

    def __init__(self) -> None:
        super().__init__(BaselineConfig())
        self.calls = 0

    def push(self, chunk: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls > 5:
            raise RuntimeError("engine exploded")
        return super().push(chunk)


def test_a_failing_pipeline_reports_once_instead_of_freezing(renderer) -> None:
    failures: list[BaseException] = []

    async def scenario() -> None:
        clock = VirtualClock()
        media = SessionMedia(renderer, BrokenDriver(), InlineScheduler(clock), clock,  # type: ignore[arg-type]
                             MediaConfig(live=False), on_failure=failures.append)
        media.start()
        media.push_audio(_speech_like(1.0))
        await clock.advance(1.0)
        assert not media.running
        await media.aclose()

    asyncio.run(scenario())
    assert len(failures) == 1 and "exploded" in str(failures[0])


Action = tuple[float, Callable[[SessionMedia], Any]]


def _microphone(audio: np.ndarray, phase: float) -> list[Action]:
    """A caller's microphone: 20 ms packets arriving ``phase`` s into the playout grid."""
    def packet(k: int) -> Callable[[SessionMedia], Any]:
        return lambda m: m.push_audio(audio[k * 320:(k + 1) * 320])
    return [(phase + 0.02 * k, packet(k)) for k in range(audio.size // 320)]


def _live_waits(renderer, follow: bool, learned: bool) -> tuple[list[float], SessionMedia]:
    """Seconds from a live block's arrival to its pair being played, over the last second of
    a 5 s call whose packets arrive 5 ms after the grid's ticks (a pair then waits ~30 ms)."""
    played_at: dict[int, float] = {}

    def setup(media: SessionMedia) -> None:
        if not follow:
            media.phase = PlayoutPhase(PhaseConfig(margin=1.0))  # never moves
        publish = media.publish

        def timed(pair: AVPair) -> None:
            played_at[pair.slot] = media.clock.now()
            publish(pair)
        media.publish = timed  # type: ignore[method-assign]

    played, _, media = _run(renderer, 5.0, live=True, setup=setup, delay=0.005,
                            actions=_microphone(_speech_like(5.0), 0.005),
                            driver=_learned() if learned else None)
    waits = [played_at[p.slot] - p.arrived for p in played
             if p.live and p.arrived is not None and played_at[p.slot] > 4.0]
    return waits, media


@pytest.mark.parametrize("learned", [False, True], ids=["baseline", "learned"])
def test_a_live_grid_moves_to_just_after_its_pairs_are_made(renderer, learned: bool) -> None:
    fixed, _ = _live_waits(renderer, follow=False, learned=learned)
    moved, media = _live_waits(renderer, follow=True, learned=learned)
    assert len(moved) >= 20 and len(fixed) >= 20
    assert media.phase.offset < -0.01  # the grid ticks earlier than where it started
    assert np.median(moved) <= np.median(fixed) - 0.01  # ≥ 10 ms less from audio to frame
    assert media.phase.slips == 0  # no idle pair slipped into the speech
    assert media.stats.dropped_pairs <= 1 and media.stats.late_slots <= 1  # the first one


def test_an_agent_stream_keeps_its_grid(played_speech) -> None:
    _audio, (_played, _events, media) = played_speech
    assert media.phase.offset == 0.0  # queued ahead on purpose: nothing to follow


def test_playout_phase_moves_in_small_steps_backs_off_and_keeps_a_floor() -> None:
    phase = PlayoutPhase(PhaseConfig(margin=0.008, window=5, step=0.002, backoff=0.01,
                                     creep=0.0))
    for _ in range(5):
        phase.waited(0.030)
    offsets = [phase.tick() for _ in range(15)]
    assert np.allclose(np.diff([0.0, *offsets])[:11], -0.002)  # 22 ms spare, 2 ms a tick
    assert offsets[-1] == pytest.approx(-0.022)
    phase.late()  # speech slipped a slot: 10 ms back, and never that early again
    assert [phase.tick() for _ in range(6)][-1] == pytest.approx(-0.012)
    for _ in range(5):
        phase.waited(0.050)
    assert [phase.tick() for _ in range(6)][-1] == pytest.approx(-0.012)  # held by the floor
