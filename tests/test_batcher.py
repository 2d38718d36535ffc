"""Cross-session batching: one engine call for the ready windows of many sessions."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from tests.test_media import InlineScheduler, _speech_like
from vivify.engines.audio.audio_io import SAMPLES_PER_FRAME
from vivify.engines.motion.driver import BatchableDriver
from vivify.engines.motion.generator import GeneratorRunner, MotionGenerator
from vivify.streamer.media.batcher import WindowBatcher
from vivify.streamer.media.clock import VirtualClock
from vivify.streamer.media.render_paths import BatchedGeneratorPath, SharedEngines
from vivify.streamer.media.scheduler import InferenceScheduler
from vivify.streamer.media.session_media import MediaConfig, SessionMedia


class RecordingRunner:
    """Doubles each request; remembers the batch sizes it was called with."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[int] = []
        self.fail_on = fail_on

    def infer_requests(self, requests: list[Any]) -> list[np.ndarray]:
        self.calls.append(len(requests))
        if self.fail_on is not None and self.fail_on in requests:
            raise RuntimeError("engine fell over")
        return [np.full(2, 2.0 * r) for r in requests]


def test_windows_from_many_sessions_share_calls() -> None:
    async def scenario() -> tuple[list[np.ndarray], RecordingRunner, WindowBatcher]:
        scheduler = InferenceScheduler(workers=1)
        scheduler.start()
        runner = RecordingRunner()
        batcher = WindowBatcher(runner, scheduler, max_batch=8)
        try:
            first = await batcher.infer(0)  # alone on an idle engine: sent at once
            outs = await asyncio.gather(*(batcher.infer(i) for i in range(1, 21)))
            return [first, *outs], runner, batcher
        finally:
            await batcher.aclose()
            scheduler.close()

    outs, runner, batcher = asyncio.run(scenario())
    assert [float(o[0]) for o in outs] == [2.0 * i for i in range(21)]  # each got its own
    assert runner.calls[0] == 1
    assert sum(runner.calls) == 21 and max(runner.calls) == 8  # capped, and batched
    assert len(runner.calls) <= 4
    assert batcher.stats.windows == 21 and batcher.stats.largest == 8


def test_a_failed_call_reaches_its_sessions_and_the_batcher_goes_on() -> None:
    async def scenario() -> tuple[list[Any], np.ndarray]:
        scheduler = InferenceScheduler(workers=1)
        scheduler.start()
        batcher = WindowBatcher(RecordingRunner(fail_on=3), scheduler)
        try:
            got = await asyncio.gather(*(batcher.infer(i) for i in range(5)),
                                       return_exceptions=True)
            return got, await batcher.infer(7)
        finally:
            await batcher.aclose()
            scheduler.close()

    got, after = asyncio.run(scenario())
    assert all(isinstance(g, RuntimeError) for g in got)  # one batch: all five hear of it
    assert float(after[0]) == 14.0


@pytest.fixture(scope="module")
def runner() -> GeneratorRunner:
    return GeneratorRunner()


def test_learned_sessions_are_batched_and_match_the_unbatched_driver(
        renderer, runner: GeneratorRunner) -> None:
    """Three sessions through SessionMedia + batcher make the frames a lone driver makes."""
    audios = [_speech_like(1.2, seed=s) for s in range(3)]
    captured: list[list[np.ndarray]] = [[], [], []]

    class Spy(MotionGenerator):
        def __init__(self, k: int) -> None:
            super().__init__(runner, seed=k)
            self.k = k

        def accept(self, window: np.ndarray) -> np.ndarray:
            frames = super().accept(window)
            captured[self.k].append(frames)
            return frames

    async def scenario() -> WindowBatcher:
        clock = VirtualClock()
        scheduler = InlineScheduler(clock)
        batcher = WindowBatcher(runner, scheduler)  # type: ignore[arg-type]
        medias = [SessionMedia(renderer, Spy(k), scheduler, clock,  # type: ignore[arg-type]
                               MediaConfig(depth=3, live=False),
                               shared=SharedEngines(batcher=batcher)) for k in range(3)]
        for m, a in zip(medias, audios, strict=True):
            assert isinstance(m.path, BatchedGeneratorPath)
            m.start()
            m.push_audio(a)
        await clock.advance(2.0)
        for m in medias:
            await m.aclose()
        await batcher.aclose()
        return batcher

    batcher = asyncio.run(scenario())
    assert batcher.stats.largest >= 2  # windows of different sessions shared engine calls
    for k, audio in enumerate(audios):
        alone = MotionGenerator(runner, seed=k).push(audio)
        got = np.concatenate(captured[k])
        n = min(len(alone), len(got))
        assert n >= len(audio) // SAMPLES_PER_FRAME - 4
        np.testing.assert_allclose(got[:n], alone[:n], atol=1e-4)


def test_only_the_learned_generator_is_batchable(runner: GeneratorRunner) -> None:
    from vivify.engines.motion.baseline import BaselineConfig, BaselineDriver

    assert isinstance(MotionGenerator(runner), BatchableDriver)
    assert not isinstance(BaselineDriver(BaselineConfig()), BatchableDriver)
