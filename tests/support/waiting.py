"""Waiting for a condition instead of sleeping.

A test that sleeps for a fixed time is either slow (the sleep is long enough for the slowest
machine) or flaky (it is not). These wait for what the test needs to have happened, polling
every :data:`POLL_S`, and fail with a readable message after ``timeout`` seconds (``within``
for the async one), which bounds a stuck test and is no speed requirement: pick it generously.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL_S = 0.02  # half a video frame: fine enough for anything a test waits for
DEFAULT_TIMEOUT_S = 10.0


class WaitTimedOut(AssertionError):
    """The condition did not hold within the timeout (an assertion: the test fails)."""


def wait_until(cond: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT_S,
               what: str = "the condition") -> None:
    """Block until ``cond()`` is true (for threads: a live server, a browser)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise WaitTimedOut(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_S)


async def eventually(cond: Callable[[], bool], within: float = DEFAULT_TIMEOUT_S,
                     what: str = "the condition") -> None:
    """:func:`wait_until` without blocking the event loop."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise WaitTimedOut(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(POLL_S)


def grown_by(count: Callable[[], int], n: int) -> Callable[[], bool]:
    """A condition: ``count()`` has grown by ``n`` since the condition was first asked.

    "25 more frames went out" is one second of media, however fast the machine is, where a
    one-second sleep is one second of wall clock, however few frames that was.
    """
    start: int | None = None

    def cond() -> bool:
        nonlocal start
        now = count()
        if start is None:
            start = now
        return now - start >= n

    return cond
