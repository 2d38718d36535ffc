"""``make bench``: every benchmark part in order, one JSON, one markdown report with plots.

``python -m bench.run`` (≤ 10 min on the 2-core VM), ``--quick`` (≤ 2 min), ``--tiny`` (seconds:
the test's mode, stages only). Parts, each its own child process so a crash, a hang or one
part's threads cannot take down or skew the others:

``stages``    bench/stages.py pinned to one core: per-stage costs, batch sizes, runtimes,
              offline render speed.
``loopback``  bench/loopback.py: the real server and aiortc peers: latency, fps, A/V offset,
              interrupt, the capacity ramp and the server's memory.

Output goes to ``bench/results/run-<time>-<mode>/``: ``bench.json`` (machine, versions, git
sha, settings, every part's full results), each part's own JSON, ``report.md`` and its PNGs.
A full run also replaces ``bench/results/latest/``, which docs/benchmarks.md links.

Progress: every line a part prints is shown with the run's elapsed time and the part's name,
plus a heartbeat when a part is quiet. A failing part or stage is named, its error recorded,
the other parts still run, the JSON and report are written anyway, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import report as report_mod
from bench.harness.machine import REPO, machine_info
from bench.harness.modes import add_mode_arguments, mode_of, parse_subset
from bench.harness.results import write_json

RESULTS = REPO / "bench" / "results"
PARTS = ("stages", "loopback")
HEARTBEAT_S = 15.0
_OWN_STAMP = re.compile(r"^\[\s*[\d.]+ s\] ")  # a part's own "[  12.3 s] " prefix


@dataclass(frozen=True)
class Plan:
    """What one run does: the mode, the parts and each part's command line and time limit."""

    mode: str
    parts: tuple[str, ...]
    timeouts_s: dict[str, float]
    loopback_args: tuple[str, ...]
    fail: str | None = None  # test hook: "stages.<stage>" makes that stage raise
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_mode(cls, mode: str, parts: Sequence[str] | None = None,
                 fail: str | None = None) -> Plan:
        if mode == "full":  # stages ~1–2 min, loopback ≤ 6 min budget + server start
            return cls(mode, tuple(parts or PARTS), {"stages": 240.0, "loopback": 420.0},
                       (), fail)
        if mode == "quick":  # stages ~10–25 s, loopback ~90 s (capacity levels 1–3)
            return cls(mode, tuple(parts or PARTS), {"stages": 45.0, "loopback": 110.0},
                       ("--quick", "--budget", "80"), fail)
        if mode == "tiny":  # the test: a few seconds; loopback only when asked for
            return cls(mode, tuple(parts or ("stages",)), {"stages": 60.0, "loopback": 60.0},
                       ("--quick", "--stages", "mirror", "--mirror-seconds", "4",
                        "--budget", "15"), fail)
        raise ValueError(f"mode: one of full, quick, tiny; got {mode!r}")

    def command(self, part: str, out: Path) -> tuple[list[str], dict[str, str]]:
        """The child's argv and environment for ``part`` writing its JSON to ``out``."""
        env = dict(os.environ, PYTHONPATH=str(REPO), **self.env)
        if part == "stages":
            argv = [sys.executable, str(REPO / "bench" / "stages.py"), "--out", str(out)]
            if self.mode != "full":
                argv.append(f"--{self.mode}")
            if self.fail and self.fail.startswith("stages."):
                argv += ["--fail", self.fail.split(".", 1)[1]]
            # One core, one BLAS/OpenCV thread: a stage figure is one core's cost.
            env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
            if shutil.which("taskset") and 0 in os.sched_getaffinity(0):
                argv = ["taskset", "-c", "0", *argv]
            return argv, env
        if part == "loopback":
            return [sys.executable, str(REPO / "bench" / "loopback.py"), "--out", str(out),
                    *self.loopback_args], env
        raise ValueError(f"unknown part {part!r}; known: {', '.join(PARTS)}")


class Progress:
    """Prefixes every line with the run's elapsed time and the part's name."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, part: str, message: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {part} › {message}", flush=True)


def run_part(part: str, argv: list[str], env: dict[str, str], timeout_s: float,
             progress: Progress) -> dict[str, Any]:
    """Run one part's child, relaying its output; its exit code, wall time and output tail."""
    t0 = time.monotonic()
    progress.say(part, f"start (limit {timeout_s:.0f} s): {' '.join(argv[-6:])}")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, cwd=REPO, env=env, start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()
    tail: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    status: dict[str, Any] = {"timed_out": False}
    try:
        while True:
            left = t0 + timeout_s - time.monotonic()
            if left <= 0:
                status["timed_out"] = True
                progress.say(part, f"TIMED OUT after {timeout_s:.0f} s: stopping it")
                _stop(proc)
                break
            try:
                line = lines.get(timeout=min(left, HEARTBEAT_S))
            except queue.Empty:
                progress.say(part, f"still running ({time.monotonic() - t0:.0f} s)")
                continue
            if line is None:
                break
            tail = [*tail[-29:], line]
            if line.strip():
                progress.say(part, _OWN_STAMP.sub("", line))
    except KeyboardInterrupt:
        _stop(proc)
        raise
    rc = proc.wait()
    status.update(rc=rc, wall_s=round(time.monotonic() - t0, 1), output_tail=tail[-15:])
    progress.say(part, f"{'ok' if rc == 0 else f'exit code {rc}'} in {status['wall_s']} s")
    return status


def _stop(proc: subprocess.Popen[str]) -> None:
    """Terminate the part's whole process group (the loopback part has a server child)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def collect(bench: dict[str, Any], part: str, path: Path, status: dict[str, Any]) -> None:
    """Fold a part's JSON and exit status into ``bench``, naming every failure."""
    bench["part_status"][part] = status
    data: dict[str, Any] | None = None
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            bench["part_errors"][part] = f"unreadable JSON {path.name}: {exc}"
    if data is not None:
        bench["parts"][part] = data
        bench["failed"] += [f"{part}.{name}" for name in data.get("failed", [])]
    listed = data is not None and bool(data.get("failed"))
    if status.get("timed_out"):
        bench["failed"].append(part)
        bench["part_errors"][part] = f"timed out after {status['wall_s']} s (partial results kept)"
    elif status.get("rc") != 0 and not listed:
        bench["failed"].append(part)
        tail = " / ".join(status.get("output_tail", [])[-3:])
        bench["part_errors"].setdefault(part, f"exit code {status.get('rc')}: {tail}")
    elif data is None:
        bench["failed"].append(part)
        bench["part_errors"].setdefault(part, f"wrote no JSON at {path}")


def run(plan: Plan, out_dir: Path, latest: Path | None = None) -> dict[str, Any]:
    """Run the plan's parts into ``out_dir``; write bench.json and the report; the result."""
    progress = Progress()
    out_dir.mkdir(parents=True, exist_ok=True)
    progress.say("bench", f"{plan.mode} run of {', '.join(plan.parts)} → {out_dir}")
    bench: dict[str, Any] = {"mode": plan.mode, "machine": machine_info(),
                             "settings": asdict(plan), "parts_run": list(plan.parts),
                             "parts": {}, "part_status": {}, "part_errors": {}, "failed": []}
    mach = bench["machine"]
    progress.say("bench", f"{mach['cpu']}, {mach['cores']} cores, GPU "
                          f"{'none' if not mach['gpu'] else mach['gpu']}, git {mach['git']}, "
                          f"load {mach['loadavg_at_start']}")
    write_json(out_dir / "bench.json", bench)
    try:
        for part in plan.parts:
            argv, env = plan.command(part, out_dir / f"{part}.json")
            status = run_part(part, argv, env, plan.timeouts_s[part], progress)
            collect(bench, part, out_dir / f"{part}.json", status)
            write_json(out_dir / "bench.json", bench)
    except KeyboardInterrupt:
        bench["failed"].append("interrupted")
        bench["part_errors"]["interrupted"] = "stopped by the user (Ctrl-C)"
    bench["total_s"] = round(progress.elapsed(), 1)
    write_json(out_dir / "bench.json", bench)
    try:
        path = report_mod.write_report(bench, out_dir)
        progress.say("report", f"written: {path}")
    except Exception as exc:  # the JSON is already safe; name the failure
        bench["failed"].append("report")
        bench["part_errors"]["report"] = repr(exc)
        progress.say("report", f"FAILED: {exc!r}")
    bench["total_s"] = round(progress.elapsed(), 1)
    write_json(out_dir / "bench.json", bench)
    if latest is not None:
        if latest.exists():
            shutil.rmtree(latest)
        shutil.copytree(out_dir, latest)
        progress.say("report", f"copied to {latest}")
    return bench


def print_summary(bench: dict[str, Any], out_dir: Path) -> None:
    rows = report_mod.headline_rows(bench)
    if rows:
        w0 = max(len(r[0]) for r in rows)
        print()
        for measure, result, target in rows:
            print(f"  {measure:<{w0}}  {result}   (target {target})")
    print(f"\ntotal {bench.get('total_s')} s; report {out_dir / 'report.md'}")
    for name in bench.get("failed", []):
        print(f"FAILED: {name}: {report_mod._error_of(bench, name)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_mode_arguments(parser, quick="≤ 2 min", tiny="seconds; stages only (tests)")
    parser.add_argument("--parts", help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--out-dir", type=Path, help="default bench/results/run-<time>-<mode>")
    parser.add_argument("--fail", help=argparse.SUPPRESS)  # test hook: stages.<stage>
    args = parser.parse_args(argv)
    name = mode_of(args)
    parts = parse_subset(args.parts, PARTS, "part")
    plan = Plan.for_mode(name, parts, args.fail)
    out_dir = args.out_dir or RESULTS / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{name}"
    # Only a complete default run becomes "latest", the report docs/benchmarks.md links.
    latest = RESULTS / "latest" if name == "full" and args.out_dir is None and not parts \
        else None
    bench = run(plan, out_dir, latest)
    print_summary(bench, out_dir)
    return 1 if bench["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
