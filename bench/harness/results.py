"""Result files and the summary statistics every benchmark reports them with."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def jsonable(x: Any) -> Any:
    """``json.dumps``' fallback: numpy scalars as Python numbers, paths as text, else repr."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return repr(x)


def write_json(path: Path, report: dict[str, Any], indent: int = 1) -> None:
    """Write ``report`` atomically (a reader never sees half a file): results are rewritten
    after every stage, so a failed or interrupted run keeps what it measured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=indent, default=jsonable))
    tmp.replace(path)


def percentiles(values: Sequence[float | None]) -> dict[str, Any]:
    """p50, p95, p99, min, max and n of ``values`` in ms (None when empty)."""
    v = np.asarray([x for x in values if x is not None], np.float64)
    if v.size == 0:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "min_ms": None,
                "max_ms": None}
    return {"n": int(v.size), "p50_ms": round(float(np.percentile(v, 50)), 1),
            "p95_ms": round(float(np.percentile(v, 95)), 1),
            "p99_ms": round(float(np.percentile(v, 99)), 1),
            "min_ms": round(float(v.min()), 1), "max_ms": round(float(v.max()), 1)}


def fps_series(times: Sequence[float] | np.ndarray, bin_s: float = 1.0) -> list[float]:
    """Delivered frame rate in consecutive ``bin_s`` bins from the first frame (the last,
    partial bin dropped): the "fps over time" plot, where a stall shows as a dip."""
    t = np.asarray(times, np.float64)
    if t.size < 2:
        return []
    n_bins = int((t[-1] - t[0]) // bin_s)
    if n_bins < 1:
        return []
    counts = np.bincount(((t - t[0]) // bin_s).astype(int), minlength=n_bins + 1)[:n_bins]
    return [round(float(c) / bin_s, 1) for c in counts]


def frame_rate(times: Sequence[float] | np.ndarray, settle_s: float = 1.0) -> dict[str, Any]:
    """Delivered rate and inter-frame gaps from ``settle_s`` after the first frame."""
    t = np.asarray(times, np.float64)
    if t.size < 3:
        return {"fps": None, "gap_p95_ms": None, "gap_max_ms": None, "frames": int(t.size)}
    steady = t[t >= t[0] + settle_s]
    if steady.size < 3:
        steady = t
    gaps = np.diff(steady) * 1e3
    return {"fps": round((steady.size - 1) / (steady[-1] - steady[0]), 2),
            "gap_p50_ms": round(float(np.percentile(gaps, 50)), 1),
            "gap_p95_ms": round(float(np.percentile(gaps, 95)), 1),
            "gap_max_ms": round(float(gaps.max()), 1),
            "gaps_over_80ms": int((gaps > 80).sum()), "frames": int(steady.size),
            "seconds": round(float(steady[-1] - steady[0]), 2)}
