"""The inference loop: every session's generation work runs here, off the event loop.

Jobs from all sessions go into one queue; worker threads (one per core by default) take them
in arrival order, so one slow session cannot starve the others, and the event loop never runs
NumPy or OpenCV. Results come back to the loop with ``call_soon_threadsafe``.

Batching across sessions (one engine call for the windows of many sessions) arrives with the
learned generator, whose windows can be stacked; the baseline driver and the renderer are
per-frame NumPy/OpenCV work that gains nothing from stacking.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_STOP = object()


class SchedulerBusyError(RuntimeError):
    """More work was queued than the workers can ever catch up with."""


@dataclass
class _Job:
    fn: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    queued_at: float = field(default_factory=time.perf_counter)


class InferenceScheduler:
    """A bounded pool of worker threads fed from one queue."""

    def __init__(self, workers: int = 1, max_queue: int = 256) -> None:
        if workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {workers}")
        self.workers = workers
        self._queue: queue.Queue[_Job | object] = queue.Queue(maxsize=max_queue)
        self._threads: list[threading.Thread] = []
        self.busy_seconds = 0.0  # summed job time: busy_seconds / wall / workers = load
        self.jobs_done = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._threads:
            return
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"vivify-infer-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        """Stop the workers after the jobs already queued; safe to call twice."""
        threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(_STOP)
        for t in threads:
            t.join(timeout=5)

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on a worker and await its result (exceptions propagate)."""
        if not self._threads:
            raise RuntimeError("scheduler is not running")
        loop = asyncio.get_running_loop()
        job = _Job(fn=fn, loop=loop, future=loop.create_future())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise SchedulerBusyError("the inference queue is full") from None
        return await job.future

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, _Job)
            if item.future.cancelled():
                continue
            t0 = time.perf_counter()
            try:
                result: Any = item.fn()
                error: BaseException | None = None
            except BaseException as exc:  # handed to the awaiting task, never lost
                result, error = None, exc
            with self._lock:
                self.busy_seconds += time.perf_counter() - t0
                self.jobs_done += 1
            try:
                item.loop.call_soon_threadsafe(_settle, item.future, result, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                log.debug("dropping a result for a closed event loop")


def _settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
