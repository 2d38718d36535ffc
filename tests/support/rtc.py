"""What a peer connection received: every decoded frame of its remote tracks, as arrays."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import numpy as np


class TrackRecorder:
    """Pulls the remote tracks of ``pc`` in background tasks from construction until
    :meth:`stop` (call it after the answer was applied): ``video`` holds RGB frames,
    ``audio`` mono-flattened sample arrays, in arrival order. A track that ends stops its
    pull quietly; read the lists while it runs to wait on them (``tests.support.waiting``).
    """

    def __init__(self, pc: Any) -> None:
        self.video: list[np.ndarray] = []
        self.audio: list[np.ndarray] = []
        self._tasks = [asyncio.create_task(self._pull(r.track)) for r in pc.getReceivers()]

    async def _pull(self, track: Any) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.video.append(frame.to_ndarray(format="rgb24"))
                else:
                    self.audio.append(frame.to_ndarray().reshape(-1))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
