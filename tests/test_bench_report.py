"""`make bench` orchestration (bench/run.py), its report (bench/report.py) and the soak's maths."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import loopback_analysis as la
from bench import report, run, soak
from bench.harness import procfs, results


def _fake_loopback() -> dict:
    """A loopback result shaped like bench/loopback.py's, with made-up but plausible figures."""
    rng = np.random.default_rng(0)

    def level(n: int, attempt: int, ok: bool) -> dict:
        lat = list(np.round(rng.normal(300 + 60 * n, 30, 6 * n), 1))
        return {"sessions": n, "attempt": attempt, "real_time": ok,
                "fps_min": 24.9 if ok else 22.0, "onset_latency": results.percentiles(lat),
                "onset_latency_each_ms": lat, "onsets_missed": 0,
                "fps_series_each": [[25.0] * 8 for _ in range(n)],
                "rss_mib": {"before": 280.0, "median": 280.0 + 30 * n, "max": 300.0 + 30 * n},
                "cpu": {"cores_busy": round(0.62 * n, 2), "cores_server": round(0.4 * n, 2),
                        "cores_client": round(0.12 * n, 2), "cores_others": 0.1}}

    levels = [level(1, 1, True), level(2, 1, True), level(3, 1, False), level(3, 2, False)]
    mirror_lat = [290.0, 310.0, 305.0, 330.0, 280.0]
    return {"stages": {
        "mirror": {"onset_latency": results.percentiles(mirror_lat),
                   "onset_latency_each_ms": mirror_lat, "onsets_missed": 0,
                   "video": {"fps": 24.98, "gap_p95_ms": 44.0}, "fps_series": [25.0] * 30,
                   "av_offset": results.percentiles([-20.0, 10.0]), "start_ms": 150.0,
                   "rss_mib": {"before": 240.0, "median": 265.0}, "cpu": {"cores_others": 0.2}},
        "session_start": results.percentiles([70.0, 90.0, 150.0]),
        "interrupt": {"to_idle_match": results.percentiles([120.0, 150.0])},
        "capacity": {"levels": levels, "real_time_sessions": 2,
                     "stopped": "level 3 is not real-time (twice)",
                     "single_session_p95_ms": levels[0]["onset_latency"]["p95_ms"],
                     "criteria": "…",
                     "rss_per_session_mib": la.rss_per_session(levels, 280.0)}},
        "memory": {"rss_series": [[t * 0.5, 240.0 + t] for t in range(100)],
                   "rss_first_mib": 240.0, "rss_peak_mib": 339.0, "rss_last_mib": 339.0},
        "failed": []}


def test_report_writes_every_plot_and_labels_the_anchors(tmp_path: Path) -> None:
    bench = {"mode": "full", "machine": {"cpu": "Test CPU", "cores": 2, "gpu": None},
             "parts": {"loopback": _fake_loopback()}, "failed": []}
    path = report.write_report(bench, tmp_path)
    text = path.read_text()
    for png in report.PLOTS.values():
        assert (tmp_path / png).stat().st_size > 5000, png
        assert f"({png})" in text
    assert text.count("published, not measured here") >= 3
    for name, claim, _ in report.ANCHORS:
        assert name in text and claim in text
    assert "| 3 | 2 | no |" in text  # the retried failing level is in the table
    assert "2 real-time session(s)" in text
    assert "30 MiB" in text  # RSS slope over the ramp: +30 MiB per session
    assert "CPU-bound" in text  # 1.86 of 2 cores busy at the first failing level


def test_collect_names_failed_parts_and_stages(tmp_path: Path) -> None:
    bench: dict = {"parts": {}, "part_status": {}, "part_errors": {}, "failed": []}
    (tmp_path / "stages.json").write_text(json.dumps({"failed": ["renderer"], "stages": {
        "renderer": {"error": "RuntimeError('boom')"}}}))
    run.collect(bench, "stages", tmp_path / "stages.json", {"rc": 1, "wall_s": 1.0})
    run.collect(bench, "loopback", tmp_path / "none.json",
                {"rc": 2, "wall_s": 1.0, "output_tail": ["Traceback", "ValueError: x"]})
    run.collect(bench, "other", tmp_path / "stages.json",
                {"rc": -15, "wall_s": 9.0, "timed_out": True})
    assert bench["failed"] == ["stages.renderer", "loopback", "other.renderer", "other"]
    assert "ValueError: x" in bench["part_errors"]["loopback"]
    assert "timed out" in bench["part_errors"]["other"]
    assert report._error_of(bench, "stages.renderer") == "RuntimeError('boom')"


def test_run_part_relays_progress_and_stops_a_hung_part(capsys: pytest.CaptureFixture) -> None:
    code = "import time; print('[   1.0 s] step: hello', flush=True); time.sleep(60)"
    status = run.run_part("hang", [sys.executable, "-c", code], {}, 1.5, run.Progress())
    out = capsys.readouterr().out
    assert status["timed_out"] and status["rc"] != 0
    assert "hang › step: hello" in out and "TIMED OUT" in out


def test_fps_series_and_rss_per_session() -> None:
    t = np.concatenate([np.arange(0, 3, 0.04), np.arange(3.5, 6, 0.04)])  # a 0.5 s stall
    series = results.fps_series(t)
    assert series[:3] == [25.0, 25.0, 25.0] and series[3] < 20 and len(series) == 5
    assert results.fps_series([1.0]) == []
    levels = [{"sessions": n, "rss_mib": {"median": 300.0 + 40 * n}} for n in (1, 2, 3)]
    got = la.rss_per_session(levels, 330.0)
    assert got == {"slope": 40.0, "one_session_delta": 10.0}
    assert procfs.rss_mib(10**9) is None


def test_soak_flatness_verdict() -> None:
    t = np.arange(0, 600, 0.5)
    flat = [[x, 300.0 + (30.0 if x < 60 else 0.0) + 0.5 * np.sin(x)] for x in t]
    leak = [[x, 300.0 + 0.05 * x] for x in t]  # 3 MiB/min: 27 MiB over 9 min
    f = soak.flatness(flat, 60.0)
    assert f["flat"] is True and abs(f["slope_mib_per_min"]) < 0.1
    g = soak.flatness(leak, 60.0)
    assert g["flat"] is False and g["slope_mib_per_min"] == pytest.approx(3.0, abs=0.01)
    assert soak.flatness(leak[:5], 0.0)["flat"] is None


@pytest.mark.slow
def test_tiny_run_writes_everything_and_records_a_failing_stage(face_models: Path,
                                                                 tmp_path: Path) -> None:
    """The real orchestration in tiny mode (stages only, ~5–10 s): a stage made to fail is
    named, the other stages still run, JSON + report are written, the exit code is 1."""
    rc = run.main(["--tiny", "--out-dir", str(tmp_path), "--fail", "stages.encode_h264"])
    assert rc == 1
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["failed"] == ["stages.encode_h264"]
    stages = bench["parts"]["stages"]["stages"]
    assert "injected failure" in stages["encode_h264"]["error"]
    for name in ("audio_features", "baseline_driver", "motion_generator", "renderer",
                 "encode_vp8", "offline_render"):
        assert "error" not in stages[name], (name, stages[name].get("error"))
    gen = stages["motion_generator"]["runtimes"]["ort-cpu"]
    assert set(gen) == {"1", "4", "16"}
    assert stages["offline_render"]["x_realtime"] > 0
    m = bench["machine"]
    assert m["cores"] and m["cpu"] and "onnxruntime" in m["versions"] and "git" in m
    assert m["gpu"] is None or isinstance(m["gpu"], list)
    text = (tmp_path / "report.md").read_text()
    assert "stages.encode_h264" in text and "injected failure" in text
    assert "published, not measured here" in text
    assert "| encode VP8 512²" in text and "| motion: learned generator" in text
