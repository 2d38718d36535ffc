"""Cross-session batching: the ready windows of every session go to the engine in one call.

Continuous batching, the way LLM servers do it: the first window that arrives while the engine
is idle goes at once (no waiting to fill a batch, so one session pays no latency for batching);
windows that arrive while a call is running are collected and sent together as the next call.
Under load batches grow on their own, and the per-call overhead (graph dispatch, Python, the
thread hop) is paid once per batch instead of once per session.

The batcher only moves requests and results; the engine call runs on the inference scheduler's
workers, like every other piece of inference, so the event loop never runs the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vivify.streamer.media.scheduler import InferenceScheduler

log = logging.getLogger(__name__)


class BatchRunner(Protocol):
    """What the batcher needs of an engine: many windows in, their results in the same order."""

    def infer_requests(self, requests: list[Any]) -> list[np.ndarray]: ...


@dataclass
class BatchStats:
    calls: int = 0
    windows: int = 0
    largest: int = 0
    sizes: Counter[int] = field(default_factory=Counter)  # batch size → calls

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "windows": self.windows, "largest": self.largest,
                "mean": round(self.windows / self.calls, 2) if self.calls else None,
                "sizes": dict(sorted(self.sizes.items()))}


class WindowBatcher:
    """Shared by all sessions of one server; ``infer`` is awaited by each session's producer."""

    def __init__(self, runner: BatchRunner, scheduler: InferenceScheduler,
                 max_batch: int = 32) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be ≥ 1, got {max_batch}")
        self.runner = runner
        self.scheduler = scheduler
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._waiting: list[tuple[Any, asyncio.Future[np.ndarray]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def infer(self, request: Any) -> np.ndarray:
        """The engine's output for one session's window (exceptions propagate to the caller)."""
        fut: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, fut))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="window-batcher")
        return await fut

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def aclose(self) -> None:
        task, self._drainer = self._drainer, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for _, fut in self._waiting:
            if not fut.done():
                fut.cancel()
        self._waiting.clear()

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let producers woken by the same tick add their windows
        while self._waiting:
            batch = [(r, f) for r, f in self._waiting[: self.max_batch] if not f.done()]
            del self._waiting[: self.max_batch]
            if not batch:
                continue
            requests = [r for r, _ in batch]
            try:
                outs = await self.scheduler.run(
                    functools.partial(self.runner.infer_requests, requests))
            except Exception as exc:  # every waiting session hears of it; the loop goes on
                log.warning("batched engine call failed for %d requests: %s", len(batch), exc)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.stats.calls += 1
            self.stats.windows += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
            self.stats.sizes[len(batch)] += 1
            for (_, fut), out in zip(batch, outs, strict=True):
                if not fut.done():
                    fut.set_result(out)
