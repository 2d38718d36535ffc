"""``make bench-soak``: is the server's memory flat over a long run with sessions coming and going?

``python -m bench.soak`` (10 min; ``--minutes`` to change). The real server runs in a child
process (bench/loopback.py's ``loopback_server``); ``--sessions`` slots each open a mirror
session from an aiortc peer that speaks the loopback benchmark's cycling signal, keep it for
``--session-seconds``, close it and open the next one at once, slots staggered so sessions
start and end all through the run. The server's RSS (VmRSS of its one process: the workers are
threads) is sampled every 0.5 s with the number of open sessions.

Flatness: after a warm-up (the first 20 % or 60 s, whichever is longer: first-use allocations,
caches, the allocator's arenas) a straight line is fitted to RSS over time. The run is *flat*
when that line grows less than ``max(10 MiB, 2 % of the median RSS)`` over the measured span,
and the report also gives the projected growth per hour and the idle RSS before the first
session and after the last (drained) one. Results: ``bench/results/soak-<time>/`` with
``soak.json``, ``report.md`` and ``rss.png``. Not part of ``make bench`` (it takes 10 min).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import loopback as lb
from bench.harness.machine import REPO, machine_info
from bench.harness.peers import SEND_RATE, Peer
from bench.harness.procfs import RssSeries
from bench.harness.results import frame_rate
from bench.harness.runner import log
from bench.report import plot_rss
from bench.signals import cycle_signal, speech_clips
from vivify.streamer.client import ApiClient

FLAT_MIB = 10.0
FLAT_FRACTION = 0.02


def flatness(series: Sequence[Sequence[float]], warmup_s: float) -> dict[str, Any]:
    """Fit RSS(t) after ``warmup_s``: slope, projected growth, and the flat verdict."""
    pts = np.array([(t, m) for t, m in series if t >= warmup_s], np.float64)
    if pts.shape[0] < 10:
        return {"flat": None, "reason": "too few samples after the warm-up"}
    t, m = pts[:, 0], pts[:, 1]
    slope = float(np.polyfit(t, m, 1)[0])  # MiB per second
    span = float(t[-1] - t[0])
    growth = slope * span
    limit = max(FLAT_MIB, FLAT_FRACTION * float(np.median(m)))
    q = max(1, t.size // 4)
    return {"flat": bool(growth < limit), "slope_mib_per_min": round(slope * 60, 3),
            "growth_over_span_mib": round(growth, 1), "span_s": round(span, 1),
            "limit_mib": round(limit, 1), "projected_mib_per_hour": round(slope * 3600, 1),
            "first_quarter_median_mib": round(float(np.median(m[:q])), 1),
            "last_quarter_median_mib": round(float(np.median(m[-q:])), 1),
            "warmup_s": round(warmup_s, 1)}


class Soak:
    """Cycles sessions against one server and records its memory."""

    def __init__(self, url: str, rss: RssSeries, minutes: float, sessions: int,
                 session_s: float) -> None:
        self.url = url
        self.rss = rss
        self.clips = speech_clips(SEND_RATE)
        self.duration = minutes * 60.0
        self.slots = sessions
        self.session_s = session_s
        self.open = 0
        self.counts: list[tuple[float, int]] = []
        self.closed: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.t0 = time.monotonic()

    def _count(self, delta: int) -> None:
        self.open += delta
        self.counts.append((time.monotonic(), self.open))

    async def slot(self, k: int) -> None:
        """Open, hold and close sessions one after another until the run's end."""
        await asyncio.sleep(k * self.session_s / self.slots)
        body = {"avatar": "default", "mode": "mirror", "video": {"fps": 25, "size": 512}}
        end = self.t0 + self.duration
        while time.monotonic() + 5.0 < end:
            hold = min(self.session_s, end - time.monotonic())
            signal, _ = cycle_signal(hold + 5.0, SEND_RATE, self.clips, lead_s=1.0 + 0.3 * k)
            peer = Peer(signal)
            try:
                async with ApiClient(self.url) as api:
                    await peer.open(api, body)
                self._count(+1)
                await asyncio.sleep(hold)
            except Exception as exc:  # keep cycling; count it
                self.errors.append(f"slot {k}: {exc!r}")
                await asyncio.sleep(1.0)
            finally:
                if peer.session:
                    self._count(-1)
                await peer.close()
            rate = frame_rate(np.asarray(peer.video_t))
            self.closed.append({"slot": k, "t": round(time.monotonic() - self.t0, 1),
                                "frames": len(peer.video_t), "fps": rate.get("fps"),
                                "rss_mib": self.rss.last()})

    async def progress(self) -> None:
        while True:
            await asyncio.sleep(15.0)
            rss = self.rss.last()
            log("soak", f"{time.monotonic() - self.t0:5.0f}/{self.duration:.0f} s, "
                           f"{self.open} open, {len(self.closed)} sessions done, server RSS "
                           f"{rss} MiB")

    async def run(self) -> None:
        ticker = asyncio.create_task(self.progress())
        try:
            await asyncio.gather(*(self.slot(k) for k in range(self.slots)))
        finally:
            ticker.cancel()


async def soak(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": machine_info(), "settings": {
        "minutes": args.minutes, "sessions": args.sessions,
        "session_seconds": args.session_seconds}, "failed": []}
    with tempfile.TemporaryDirectory(prefix="vivify-soak-") as tmp:
        server = lb.loopback_server(Path(tmp))
        rss = RssSeries(lambda: server.pid if server.alive() else None)
        sampler: asyncio.Task[None] | None = None
        try:
            log("server", "starting")
            result["server"] = lb.start_server(server)
            sampler = asyncio.create_task(rss.sample_forever())
            await asyncio.sleep(2.0)
            result["rss_idle_start_mib"] = rss.now()
            run = Soak(server.url, rss, args.minutes, args.sessions, args.session_seconds)
            await run.run()
            result["sessions_left"] = await lb.wait_drained(server.url, 15.0)
            await asyncio.sleep(2.0)
            result["rss_idle_end_mib"] = rss.now()
            t0 = rss.samples[0][0] if rss.samples else run.t0
            series = rss.series()
            result["rss_series"] = series
            result["open_sessions"] = [[round(t - t0, 1), n] for t, n in run.counts]
            result["sessions"] = run.closed
            result["session_errors"] = run.errors
            fps = [s["fps"] for s in run.closed if s["fps"]]
            result["fps_per_session"] = {"min": min(fps) if fps else None, "median": round(
                float(np.median(fps)), 2) if fps else None}
            warm = max(60.0, 0.2 * args.minutes * 60.0)
            result["flatness"] = flatness(series, warm)
        except Exception as exc:
            result["failed"].append("soak")
            result["error"] = repr(exc)
            result["server_log_tail"] = server.log_tail()
            log("soak", f"FAILED: {exc!r}")
        finally:
            if sampler is not None:
                sampler.cancel()
            result["server_exit_code"] = server.stop()
    return result


def _verdict(flat: bool | None) -> str:
    return "unknown" if flat is None else "flat" if flat else "NOT flat"


def write_report(result: dict[str, Any], out_dir: Path) -> Path:
    """report.md and rss.png for one soak."""
    made = plot_rss(result.get("rss_series") or [], out_dir / "rss.png",
                    f"Server RSS, {result['settings']['sessions']} session slots cycling "
                    f"every {result['settings']['session_seconds']:.0f} s",
                    sessions=result.get("open_sessions"))
    f = result.get("flatness") or {}
    m = result.get("machine") or {}
    lines = [f"# Vivify soak: {result['settings']['minutes']} min, {m.get('time_utc')}", "",
             f"git `{m.get('git')}`; {m.get('cpu')}, {m.get('cores')} cores; load at start "
             f"{m.get('loadavg_at_start')}.", "",
             f"- sessions: {len(result.get('sessions', []))} opened and closed "
             f"({result['settings']['sessions']} at a time, "
             f"{result['settings']['session_seconds']} s each); errors: "
             f"{len(result.get('session_errors', []))}; fps per session min / median "
             f"{(result.get('fps_per_session') or {}).get('min')} / "
             f"{(result.get('fps_per_session') or {}).get('median')}",
             f"- server RSS idle before the first session {result.get('rss_idle_start_mib')} "
             f"MiB, idle after the last {result.get('rss_idle_end_mib')} MiB",
             f"- after a {f.get('warmup_s')} s warm-up: slope {f.get('slope_mib_per_min')} "
             f"MiB/min ({f.get('projected_mib_per_hour')} MiB/h projected), growth "
             f"{f.get('growth_over_span_mib')} MiB over {f.get('span_s')} s; first / last "
             f"quarter median {f.get('first_quarter_median_mib')} / "
             f"{f.get('last_quarter_median_mib')} MiB",
             f"- **verdict: {_verdict(f.get('flat'))}** "
             f"(flat = fitted growth < {f.get('limit_mib')} MiB over the span)", ""]
    if result.get("failed"):
        lines += [f"**FAILED**: `{result.get('error')}`", ""]
    lines += ["![Server RSS over the soak](rss.png)" if made else "(no RSS samples)", "",
              "[soak.json](soak.json)", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sessions", type=int, default=2, help="concurrent session slots")
    parser.add_argument("--session-seconds", type=float, default=30.0)
    parser.add_argument("--out-dir", type=Path)
    args = parser.parse_args(argv)
    out_dir = args.out_dir or REPO / "bench" / "results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(soak(args, out_dir))
    (out_dir / "soak.json").write_text(json.dumps(result, indent=1, default=str))
    path = write_report(result, out_dir)
    print(path.read_text())
    return 1 if result["failed"] or (result.get("flatness") or {}).get("flat") is False else 0


if __name__ == "__main__":
    sys.exit(main())
