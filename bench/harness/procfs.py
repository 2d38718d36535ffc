"""What /proc says about a process while a benchmark runs: its memory and its CPU time.

The server is one process (its workers are threads), so its VmRSS is all of its memory. On a
shared VM the CPU that *other* programs take, not the server, is often what moves the numbers,
so a stage records that too (:class:`CpuMeter`).
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def rss_mib(pid: int) -> float | None:
    """Resident set size of process ``pid`` in MiB (VmRSS from /proc); None if unreadable.
    The server is one process (its workers are threads), so this is all of its memory."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


class CpuMeter:
    """CPU time used on the whole machine, by this client process and by the server process,
    from /proc: how much of the cores other programs took while a stage ran (shared VMs)."""

    def __init__(self, pids: Callable[[], Sequence[int]]) -> None:
        self._pids = pids
        self._hz = os.sysconf("SC_CLK_TCK")
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, list[float]]:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except OSError:
            return time.monotonic(), math.nan, []
        per_pid = []
        for pid in self._pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                per_pid.append((int(stat[11]) + int(stat[12])) / self._hz)
            except (OSError, IndexError, ValueError):
                per_pid.append(math.nan)
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        return time.monotonic(), busy / self._hz, per_pid

    def read(self) -> dict[str, float | None]:
        """Cores busy on average since construction: all, this client, the server, others."""
        t1, busy1, pids1 = self._sample()
        t0, busy0, pids0 = self._start
        dt = max(t1 - t0, 1e-6)
        if math.isnan(busy1 - busy0):
            return {"cores_busy": None, "cores_client": None, "cores_server": None,
                    "cores_others": None}
        used = [(b - a) / dt for a, b in zip(pids0, pids1, strict=False)]
        used = [u if math.isfinite(u) else 0.0 for u in used]
        total = (busy1 - busy0) / dt
        return {"cores_busy": round(total, 2),
                "cores_client": round(used[0], 2) if used else None,
                "cores_server": round(used[1], 2) if len(used) > 1 else None,
                "cores_others": round(max(0.0, total - sum(used)), 2)}


class RssSeries:
    """A process's RSS over a whole run, sampled every ``every_s`` by :meth:`sample_forever`
    (an asyncio task): memory per session, per stage, and the run's plot."""

    def __init__(self, pid: Callable[[], int | None], every_s: float = 0.5) -> None:
        self.pid = pid
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []  # (monotonic time, RSS in MiB)

    async def sample_forever(self) -> None:
        """Record the RSS every ``every_s`` until cancelled."""
        while True:
            pid = self.pid()
            if pid is not None and (v := rss_mib(pid)) is not None:
                self.samples.append((time.monotonic(), v))
            await asyncio.sleep(self.every_s)

    def now(self) -> float | None:
        """The RSS right now (None when the process is gone)."""
        pid = self.pid()
        return rss_mib(pid) if pid is not None else None

    def last(self) -> float | None:
        return self.samples[-1][1] if self.samples else None

    def between(self, t0: float, t1: float) -> dict[str, float | None]:
        """Median and max RSS (MiB) sampled between ``t0`` and ``t1``."""
        v = [m for t, m in self.samples if t0 <= t <= t1]
        return {"median": round(float(np.median(v)), 1) if v else None,
                "max": round(max(v), 1) if v else None, "samples": len(v)}

    def series(self) -> list[list[float]]:
        """Every sample as ``[seconds since the first, MiB]``."""
        t0 = self.samples[0][0] if self.samples else 0.0
        return [[round(t - t0, 1), m] for t, m in self.samples]

    def summary(self, points: int = 600) -> dict[str, Any]:
        """The RSS over the whole run (downsampled to about ``points``) for the report's plot."""
        if not self.samples:
            return {"rss_series": []}
        step = max(1, len(self.samples) // points)
        return {"rss_series": self.series()[::step], "rss_first_mib": self.samples[0][1],
                "rss_peak_mib": max(m for _, m in self.samples),
                "rss_last_mib": self.samples[-1][1]}


class RssPeak:
    """A process's peak RSS while a block runs: a thread reads /proc every 10 ms, because a
    body the server buffers and frees again shows only at its peak."""

    def __init__(self, pid: int, every_s: float = 0.01) -> None:
        self.pid = pid
        self.every_s = every_s
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        m = rss_mib(self.pid)
        if m is not None and (self.peak is None or m > self.peak):
            self.peak = m

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def __enter__(self) -> RssPeak:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sample()
