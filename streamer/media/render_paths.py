"""How one session turns a 40 ms audio block into frames: chosen once, when the session starts.

Three paths, by what the server shares between sessions:

- :class:`CpuRenderPath`: the session's own driver and the CPU renderer, one worker hop per
  block for both (no shared engine).
- :class:`BatchedGeneratorPath`: the learned generator's windows go through the server's shared
  batcher (one engine call for the windows of every session), frames on the CPU renderer.
- :class:`GraphRenderPath`: frames go through the renderer graph's shared batcher (``vivify
  serve --renderer graph``), one graph call for the frames of every session; if the graph's
  engine fails (GPU out of memory, lost device) the session goes on, on the CPU path, rather
  than freezing on its last frame.

The driver applies the session's controls itself (``MotionDriver.set_controls``), so every
path draws the driver's motion as it comes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from vivify.engines.motion.driver import BatchableDriver, MotionDriver
from vivify.engines.motion.vector import MOTION_DIM, clip_motion
from vivify.engines.provenance.stamp import ProvenanceStamp
from vivify.engines.render.graph_renderer import RenderRequest
from vivify.engines.render.renderer import Renderer
from vivify.streamer.media.batcher import WindowBatcher
from vivify.streamer.media.scheduler import InferenceScheduler

log = logging.getLogger(__name__)


class RenderPath(Protocol):
    async def advance(self, block: np.ndarray) -> list[np.ndarray]:
        """One block through the driver and a renderer (off the loop): the frames it made."""
        ...

    def close(self) -> None:
        """The session is over: release what the path holds in shared engines. Idempotent."""
        ...


@dataclass
class GraphSlot:
    """A session's place in the renderer graph: the shared batcher, the avatar's key in the
    graph's bank, and how to give the place back (the avatar is detached with its last user)."""

    batcher: WindowBatcher
    key: str
    release: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class SharedEngines:
    """The engines a server shares across sessions; a session alone has neither."""

    batcher: WindowBatcher | None = None  # the learned generator's windows
    graph: GraphSlot | None = None  # the renderer graph


@dataclass(frozen=True)
class FrameDrawer:
    """Worker thread: motion frames → stamped images on the CPU renderer."""

    renderer: Renderer
    stamp: ProvenanceStamp | None = None

    def __call__(self, motions: np.ndarray) -> list[np.ndarray]:
        images = [self.renderer.render(clip_motion(m)).image for m in motions]
        if self.stamp is not None:
            images = [self.stamp.apply(im, inplace=True) for im in images]
        return images


class MotionSource(Protocol):
    async def motions(self, block: np.ndarray) -> np.ndarray:
        """The (n, MOTION_DIM) motion frames ``block`` completes."""
        ...


@dataclass(frozen=True)
class WorkerMotions:
    """The session's own driver, on a worker of the inference scheduler."""

    driver: MotionDriver
    scheduler: InferenceScheduler

    async def motions(self, block: np.ndarray) -> np.ndarray:
        return np.asarray(await self.scheduler.run(functools.partial(self.driver.push, block)))


@dataclass(frozen=True)
class BatchedMotions:
    """A batchable driver's windows through the shared batcher."""

    driver: BatchableDriver
    batcher: WindowBatcher

    async def motions(self, block: np.ndarray) -> np.ndarray:
        self.driver.add_audio(block)
        motions = []
        while (request := self.driver.ready_request()) is not None:
            motions.append(self.driver.accept(await self.batcher.infer(request)))
        return np.concatenate(motions) if motions else np.zeros((0, MOTION_DIM), np.float32)


@dataclass(frozen=True)
class CpuRenderPath:
    """Driver and CPU renderer in one worker hop per block.

    Only the driver and renderer are touched on the worker; all bookkeeping stays on the
    loop, and the producer never has two steps of one session in flight.
    """

    driver: MotionDriver
    draw: FrameDrawer
    scheduler: InferenceScheduler

    async def advance(self, block: np.ndarray) -> list[np.ndarray]:
        return list(await self.scheduler.run(functools.partial(self._step, block)))

    def _step(self, block: np.ndarray) -> list[np.ndarray]:
        return self.draw(self.driver.push(block))

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class BatchedGeneratorPath:
    """Motion from the shared generator batcher, frames on the CPU renderer."""

    source: BatchedMotions
    draw: FrameDrawer
    scheduler: InferenceScheduler

    async def advance(self, block: np.ndarray) -> list[np.ndarray]:
        motions = await self.source.motions(block)
        if not len(motions):
            return []
        return list(await self.scheduler.run(functools.partial(self.draw, motions)))

    def close(self) -> None:
        pass


@dataclass
class GraphRenderPath:
    """Frames from the renderer graph's shared batcher; on a graph failure, ``fallback`` (the
    CPU path of the same motion source) for the rest of the session."""

    source: MotionSource
    slot: GraphSlot
    draw: FrameDrawer
    scheduler: InferenceScheduler
    fallback: RenderPath
    on_fallback: Callable[[BaseException], None] = lambda _exc: None
    failed: bool = False
    _released: bool = field(default=False, repr=False)

    async def advance(self, block: np.ndarray) -> list[np.ndarray]:
        if self.failed:
            return await self.fallback.advance(block)
        motions = await self.source.motions(block)
        if not len(motions):
            return []
        try:
            return list(await asyncio.gather(*(
                self.slot.batcher.infer(RenderRequest(self.slot.key, clip_motion(m),
                                                      self.draw.stamp))
                for m in motions)))
        except Exception as exc:  # the graph's engine failed (GPU out of memory, lost device)
            log.warning("renderer graph failed (%s): this session renders on the CPU now", exc)
            self.failed = True
            self.on_fallback(exc)
        return list(await self.scheduler.run(functools.partial(self.draw, motions)))

    def close(self) -> None:
        if not self._released:
            self._released = True
            self.slot.release()


def choose_render_path(driver: MotionDriver, draw: FrameDrawer, scheduler: InferenceScheduler,
                       shared: SharedEngines,
                       on_fallback: Callable[[BaseException], None]) -> RenderPath:
    """The path for a session with ``driver``: the shared generator batcher only takes a
    batchable driver (the learned one); any other driver runs on the session's worker step."""
    source: MotionSource
    cpu: RenderPath
    if shared.batcher is not None and isinstance(driver, BatchableDriver):
        batched = BatchedMotions(driver, shared.batcher)
        source, cpu = batched, BatchedGeneratorPath(batched, draw, scheduler)
    else:
        source, cpu = WorkerMotions(driver, scheduler), CpuRenderPath(driver, draw, scheduler)
    if shared.graph is None:
        return cpu
    return GraphRenderPath(source, shared.graph, draw, scheduler, fallback=cpu,
                           on_fallback=on_fallback)
