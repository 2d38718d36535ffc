"""Running the cases: each under its time limit with its memory bars, the server restarted
if a case killed it, one line per case, the report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.fuzz.cases import CASES
from bench.fuzz.probe import (
    IDLE_TIMEOUT_S,
    MAX_SESSIONS,
    RSS_SLACK_MIB,
    SETTLE_S,
    Case,
    CaseResult,
    Outcome,
    Probe,
)
from bench.harness.procfs import RssPeak
from bench.harness.server import REPO, LiveServer

DEFAULT_OUT = REPO / "bench" / "results" / "fuzz-latest.json"
OPTIONAL_FLAGS = ("--idle-timeout",)  # dropped (and recorded) if this server does not know them


def fuzz_server(home: Path, token: str, models: Path) -> LiveServer:
    """``vivify serve`` exactly as an operator starts it, with the limits the cases test."""
    return LiveServer(home, ["--max-sessions", str(MAX_SESSIONS), "--idle-timeout",
                             str(IDLE_TIMEOUT_S)], token, optional_flags=OPTIONAL_FLAGS,
                      models=models)


def memory_verdict(case: Case, before: float | None, after: float | None,
                   peak: float | None) -> str | None:
    """Why the case's memory bar failed, or None when it held (or has none)."""
    if case.memory is None or before is None:
        return None
    value = peak if case.memory == "peak" else after
    if value is None:
        return None
    grew = value - before
    if grew < RSS_SLACK_MIB:
        return None
    return f"RSS {case.memory} +{grew:.0f} MiB ({before:.0f} → {value:.0f})"


async def recover(p: Probe) -> str | None:
    """After a case: is the server still up? If not, say how it ended and start a new one,
    so the remaining cases still see a server."""
    if await p.healthy():
        return None
    proc = p.server.proc
    rc = proc.poll() if proc is not None else None
    why = f"server DIED (rc {rc})" if rc is not None else "server alive but /healthz silent"
    p.server.kill()
    p.open_sessions.clear()
    await asyncio.to_thread(p.server.start)
    p.restarts += 1
    await p.warm_up()
    return f"{why}; restarted"


async def run_case(p: Probe, case: Case) -> CaseResult:
    """One case under its time limit, with its RSS before/after/peak and the up-check."""
    if case.memory:
        await asyncio.sleep(SETTLE_S)
    before = p.server.rss()
    t0 = time.monotonic()
    with RssPeak(p.server.pid) as sampler:
        try:
            outcome = await asyncio.wait_for(case.run(p), case.timeout_s)
        except TimeoutError:
            outcome = Outcome(False, f"no verdict within {case.timeout_s:.0f} s")
        except Exception as exc:  # a probe-side error is a failed case, not a dead probe
            outcome = Outcome(False, f"probe error: {type(exc).__name__}: {exc}"[:300])
        with contextlib.suppress(Exception):
            await asyncio.wait_for(p.cleanup(), 15)
        if case.memory == "after":
            await asyncio.sleep(SETTLE_S)
        after = p.server.rss()
    seconds = time.monotonic() - t0
    notes = [memory_verdict(case, before, after, sampler.peak)]
    if case.check_up:
        notes.append(await recover(p))
    problems = [n for n in notes if n]
    observed = "; ".join([outcome.observed.replace(p.token, "<TOKEN>"), *problems])
    return CaseResult(case.name, outcome.passed and not problems, observed, before, after,
                      sampler.peak, round(seconds, 2))


def print_result(r: CaseResult) -> None:
    rss = f"rss {r.rss_before_mib}→{r.rss_after_mib} MiB (peak {r.rss_peak_mib})"
    print(f"{'PASS' if r.passed else 'FAIL'} {r.name:<28} {r.observed}  [{rss}, "
          f"{r.seconds:.1f} s]", flush=True)


async def run_cases(server: LiveServer, quick: bool) -> tuple[Probe, list[CaseResult]]:
    probe = Probe(server, quick)
    await probe.warm_up()
    print(f"fuzz: server pid {server.pid} on {server.url}, baseline RSS "
          f"{probe.baseline_rss} MiB", flush=True)
    results: list[CaseResult] = []
    for case in CASES:
        try:
            result = await run_case(probe, case)
        except RuntimeError as exc:  # the server could not be restarted: nothing left to probe
            result = CaseResult(case.name, False, f"no server: {exc}"[:300], None, None, None, 0)
        results.append(result)
        print_result(result)
    return probe, results


def run_probe(out: Path | None = DEFAULT_OUT, quick: bool = False,
              models_root: Path | None = None) -> dict[str, Any]:
    """Start the server, run every case, stop it; the report (also written to ``out`` with the
    server log beside it, unless ``out`` is None). ``models_root``: the face models' cache
    folder (default: vivify.engines.avatar.model_store.default_cache_dir())."""
    from vivify.engines.avatar.model_store import default_cache_dir

    t0 = time.monotonic()
    models = (models_root or default_cache_dir()).resolve()
    token = "fuzz-" + secrets.token_urlsafe(18)
    with tempfile.TemporaryDirectory(prefix="vivify-fuzz-") as tmp:
        server = fuzz_server(Path(tmp), token, models)
        try:
            server.start()
            probe, results = asyncio.run(run_cases(server, quick))
        finally:
            server.kill()
        log = server.log_text()
    failed = [r for r in results if not r.passed]
    report = {
        "quick": quick, "seconds": round(time.monotonic() - t0, 1),
        "passed": len(results) - len(failed), "failed": len(failed),
        "server": {"command": server.redacted_command(), "dropped_flags": server.dropped_flags,
                   "starts": server.starts, "restarts": probe.restarts,
                   "baseline_rss_mib": probe.baseline_rss},
        "cases": [asdict(r) | {"why": c.why} for r, c in zip(results, CASES, strict=True)],
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".log").write_text(log.replace(token, "<TOKEN>"))
    if server.dropped_flags:
        print(f"fuzz: this server rejected {' '.join(server.dropped_flags)}; ran without it")
    print(f"fuzz: {report['passed']} passed, {report['failed']} failed")
    return report


def main(argv: list[str] | None = None) -> int:
    import bench.fuzz

    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=bench.fuzz.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    parser.add_argument("--quick", action="store_true", help="smaller hostile bodies")
    args = parser.parse_args(argv)
    return 1 if run_probe(args.out, args.quick)["failed"] else 0

