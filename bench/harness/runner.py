"""The stage runner: each stage timed on its own, a failing one recorded and the next run.

Every benchmark is a list of stages writing into one report (``{"stages": {}, "failed": []}``)
that is saved after each stage, so a crash, a timeout or Ctrl-C keeps what was measured. A
stage that raises is named in ``failed`` with its error and traceback (plus whatever the
benchmark adds, e.g. the server's log tail), its partial result kept; the run goes on and the
benchmark exits 1 at the end. Every stage also records its wall time, the 1-minute load
average before and after it, and whatever *meters* the benchmark adds (CPU use per process).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

_T0 = time.monotonic()


def elapsed() -> float:
    """Seconds since the benchmark started (this module's import)."""
    return time.monotonic() - _T0


def log(stage: str, message: str) -> None:
    """One progress line on stderr, with the time since the benchmark started."""
    print(f"[{elapsed():6.1f} s] {stage}: {message}", file=sys.stderr, flush=True)


class Meter(Protocol):
    """Something measured over a stage: made when it starts, read when it ends."""

    def read(self) -> Any: ...


class LoadMeter:
    """The 1-minute load average when the stage started and when it ended."""

    def __init__(self) -> None:
        self.start = os.getloadavg()[0]

    def read(self) -> list[float]:
        return [round(self.start, 2), round(os.getloadavg()[0], 2)]


def new_report(**fields: Any) -> dict[str, Any]:
    """A report with ``fields`` first, then the stages and the names of the failed ones."""
    return {**fields, "stages": {}, "failed": []}


@dataclass
class Slot:
    """Where a stage puts its result (a dict of figures)."""

    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageRunner:
    """Runs stages into ``report`` and calls ``save`` after each.

    ``on_failure`` adds context to a failed stage's record (the server's log tail); ``meters``
    are started with each stage and read into its record under their names; ``fail`` names a
    stage to fail on purpose (the tests' hook); ``digits`` rounds ``wall_s``.
    """

    report: dict[str, Any]
    save: Callable[[], None]
    on_failure: Callable[[], dict[str, Any]] = dict
    meters: Mapping[str, Callable[[], Meter]] = field(default_factory=dict)
    fail: str | None = None
    digits: int = 1

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[Slot]:
        """``with runner.stage(name) as slot: slot.result = work()`` (``await`` works too): the
        block's exception is recorded, not raised; the record is saved either way."""
        t0 = time.monotonic()
        started = {key: make() for key, make in self.meters.items()}
        load = LoadMeter()
        slot = Slot()
        try:
            yield slot
        except Exception as exc:
            log(name, f"FAILED: {exc!r}")
            self.report["failed"].append(name)
            slot.result = {"error": repr(exc), "traceback": traceback.format_exc(),
                           **self.on_failure(), **self.report["stages"].get(name, {})}
        record = slot.result
        record["wall_s"] = round(time.monotonic() - t0, self.digits)
        record["loadavg_1min"] = load.read()
        for key, meter in started.items():
            record[key] = meter.read()
        self.report["stages"][name] = record
        self.save()

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        """Run one synchronous stage ``fn()``."""
        with self.stage(name) as slot:
            if name == self.fail:
                raise RuntimeError(f"injected failure in stage {name!r} (--fail)")
            slot.result = fn()
