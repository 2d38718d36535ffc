"""Markdown report with plots from one ``make bench`` result (``bench.json``).

``python -m bench.report bench/results/run-…/bench.json`` regenerates ``report.md`` and the
PNGs next to the JSON. ``bench/run.py`` calls :func:`write_report` at the end of every run, and
also after a failure, so a partial run still gets a report that names what failed.

Everything here reads the JSON only: the report can be rebuilt, restyled or compared later
without rerunning anything. Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The anchors' own published claims, reproduced as published; none was measured here.
ANCHORS: tuple[tuple[str, str, str], ...] = (
    ("VASA-1", "512² video at 40 fps, ~170 ms start latency", "one NVIDIA RTX 4090"),
    ("MuseTalk", "30 fps+ at a 256² face region", "NVIDIA Tesla V100"),
    ("LiveTalking (wav2lip)", "~60 fps", "NVIDIA RTX 3060"),
)
FPS_FLOOR = 24.0  # capacity criterion (bench/loopback.py)
ONSET_GROWTH = 1.5
FRAME_MS = 40.0
PLOTS = {"latency_cdf": "latency_cdf.png", "fps": "fps_over_time.png",
         "capacity": "capacity.png", "rss": "rss.png"}


def _get(d: Any, *keys: str | int) -> Any:
    """``d[k0][k1]…`` or None when any step is missing (partial results are the norm)."""
    for k in keys:
        found = (isinstance(d, dict) and k in d) or (
            isinstance(d, list) and isinstance(k, int) and -len(d) <= k < len(d))
        if found:
            d = d[k]
        else:
            return None
    return d


def _ms(v: Any, digits: int = 0) -> str:
    return "—" if v is None else f"{v:.{digits}f} ms"


def _num(v: Any, fmt: str = "{:.2f}") -> str:
    return "—" if v is None else fmt.format(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return out


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(plt: Any, fig: Any, ax: Any, path: Path, title: str, *, legend: bool = True) -> bool:
    """Every plot ends alike: a light grid, the legend (unless the plot placed its own), the
    title, saved at 110 dpi, and closed, so that a report run does not pile up open figures."""
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ============================================================================ plots


def plot_latency_cdf(loopback: dict[str, Any], path: Path) -> bool:
    """Speech onset → mouth motion latency CDF: the mirror run and each capacity level."""
    curves: list[tuple[str, list[float]]] = []
    mirror = [v for v in _get(loopback, "stages", "mirror", "onset_latency_each_ms") or []
              if v is not None]
    if mirror:
        curves.append((f"1 session, mirror run (n={len(mirror)})", mirror))
    for lv in _get(loopback, "stages", "capacity", "levels") or []:
        each = [v for v in lv.get("onset_latency_each_ms") or [] if v is not None]
        if each and lv.get("attempt", 1) == 1:
            curves.append((f"{lv['sessions']} concurrent (n={len(each)})", each))
    if not curves:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, v in curves:
        x = sorted(v)
        ax.step(x, [(i + 1) / len(x) for i in range(len(x))], where="post", label=label)
    ax.set_xlabel("speech onset sent → first frame showing mouth motion (ms)")
    ax.set_ylabel("fraction of onsets")
    ax.set_ylim(0, 1.02)
    return _finish(plt, fig, ax, path, "Onset latency CDF (loopback WebRTC, real server)")


def plot_fps(loopback: dict[str, Any], path: Path) -> bool:
    """Delivered frames per second in 1 s bins: the mirror run and the lowest session of
    each capacity level (a stall shows as a dip that an average hides)."""
    series: list[tuple[str, list[float]]] = []
    mirror = _get(loopback, "stages", "mirror", "fps_series") or []
    if mirror:
        series.append(("1 session, mirror run", mirror))
    for lv in _get(loopback, "stages", "capacity", "levels") or []:
        each = [s for s in lv.get("fps_series_each") or [] if s]
        if each and lv.get("attempt", 1) == 1:
            n = min(len(s) for s in each)
            series.append((f"{lv['sessions']} concurrent, slowest session",
                           [min(s[i] for s in each) for i in range(n)]))
    if not series:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, s in series:
        ax.plot(range(1, len(s) + 1), s, marker=".", lw=1, label=label)
    ax.axhline(25, color="grey", ls=":", lw=1, label="25 fps (target)")
    ax.axhline(FPS_FLOOR, color="red", ls="--", lw=1,
               label=f"{FPS_FLOOR:.0f} fps (real-time floor)")
    ax.set_xlabel("seconds since the session's first frame")
    ax.set_ylabel("frames received in that second")
    return _finish(plt, fig, ax, path, "Delivered frame rate over time")


def plot_capacity(loopback: dict[str, Any], path: Path) -> bool:
    """Capacity curve: slowest session's fps and pooled p95 onset latency per level."""
    levels = _get(loopback, "stages", "capacity", "levels") or []
    if not levels:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax2 = ax.twinx()
    for attempt, marker in ((1, "o"), (2, "x")):
        lv = [v for v in levels if v.get("attempt", 1) == attempt]
        if not lv:
            continue
        n = [v["sessions"] for v in lv]
        suffix = "" if attempt == 1 else " (retry)"
        ax.plot(n, [v["fps_min"] for v in lv], marker=marker, color="tab:blue",
                ls="-" if attempt == 1 else "none", label="slowest session fps" + suffix)
        ax2.plot(n, [_get(v, "onset_latency", "p95_ms") or math.nan for v in lv],
                 marker=marker, color="tab:orange", ls="-" if attempt == 1 else "none",
                 label="onset latency p95" + suffix)
    ax.axhline(FPS_FLOOR, color="tab:blue", ls="--", lw=1)
    base = _get(loopback, "stages", "capacity", "single_session_p95_ms")
    if base:
        ax2.axhline(ONSET_GROWTH * base, color="tab:orange", ls="--", lw=1)
    held = _get(loopback, "stages", "capacity", "real_time_sessions")
    ax.set_xlabel("concurrent sessions (512², 25 fps)")
    ax.set_ylabel("fps (slowest session)", color="tab:blue")
    ax2.set_ylabel("p95 onset latency (ms)", color="tab:orange")
    ax.set_xticks(sorted({v["sessions"] for v in levels}))
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="lower left")
    return _finish(plt, fig, ax, path, f"Capacity: {held} real-time session(s); dashed = limits",
                   legend=False)


def plot_rss(series: Sequence[Sequence[float]], path: Path, title: str,
             sessions: Sequence[Sequence[float]] | None = None) -> bool:
    """The server's RSS over time; with ``sessions`` ((t, n) pairs) the session count too."""
    if not series:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    t = [p[0] for p in series]
    ax.plot(t, [p[1] for p in series], lw=1, color="tab:purple", label="server RSS")
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS (MiB)")
    if sessions:
        ax2 = ax.twinx()
        ax2.step([p[0] for p in sessions], [p[1] for p in sessions], where="post",
                 color="tab:grey", lw=0.8, alpha=0.7)
        ax2.set_ylabel("open sessions", color="tab:grey")
        top = max(p[1] for p in sessions)
        ax2.set_ylim(0, top + 0.5)
        ax2.set_yticks(range(int(top) + 1))
    return _finish(plt, fig, ax, path, title, legend=False)


# ============================================================================ tables


def stage_rows(stages: dict[str, Any]) -> list[list[str]]:
    """(stage, runtime, batch, median / p95 per call, per item, share of a 40 ms frame)."""
    st = stages.get("stages") or {}
    rows: list[list[str]] = []

    def per_item(name: str, label: str, key: str = "per_frame", unit: str = "frame",
                 runtime: str = "NumPy/OpenCV, 1 core") -> None:
        d = _get(st, name, key)
        if d is None:
            return
        rows.append([label, runtime, "1 (no batch API)",
                     f"{_ms(d.get('median_ms'), 3)} / {_ms(d.get('p95_ms'), 3)}",
                     f"{_ms(d.get('median_ms'), 3)} per {unit}",
                     f"{100 * d['median_ms'] / FRAME_MS:.1f} %"])

    per_item("audio_features", "audio features (causal log-mel)", unit="frame")
    per_item("baseline_driver", "motion: baseline driver", unit="frame")
    for provider, batches in (_get(st, "motion_generator", "runtimes") or {}).items():
        for b, d in batches.items():
            pw = d.get("per_window_ms")
            w = _get(st, "motion_generator", "window_frames") or 2
            rows.append([f"motion: learned generator (window of {w} frames)",
                         provider, b,
                         f"{_ms(_get(d, 'per_call', 'median_ms'), 3)} / "
                         f"{_ms(_get(d, 'per_call', 'p95_ms'), 3)}",
                         f"{_ms(pw, 3)} per window",
                         "—" if pw is None else f"{100 * pw / (w * FRAME_MS):.1f} %"])
    d = _get(st, "motion_generator", "streaming_per_window")
    if d:
        w = _get(st, "motion_generator", "window_frames") or 2
        rows.append(["motion: generator streaming path (features + model + cache)",
                     "ort-cpu", "1", f"{_ms(d['median_ms'], 3)} / "
                     f"{_ms(d['p95_ms'], 3)}", f"{_ms(d['median_ms'], 3)} per window",
                     f"{100 * d['median_ms'] / (w * FRAME_MS):.1f} %"])
    per_item("renderer", "renderer, 512² crop (first run)")
    per_item("renderer", "renderer, 512² crop (best of 3)", key="per_frame_best_of_3")
    per_item("renderer", "renderer, every layer on", key="all_layers")
    for runtime, batches in (_get(st, "renderer_graph", "runtimes") or {}).items():
        for b, d in batches.items():
            pf = d.get("per_frame_ms")
            rows.append(["renderer graph, 512² (exported, batched)", runtime, b,
                         f"{_ms(_get(d, 'per_call', 'median_ms'), 1)} / "
                         f"{_ms(_get(d, 'per_call', 'p95_ms'), 1)}", f"{_ms(pf, 2)} per frame",
                         "—" if pf is None else f"{100 * pf / FRAME_MS:.1f} %"])
    per_item("paste_back", "paste-back into 1280×720", key="frame_720p")
    for codec in ("vp8", "h264"):
        d = _get(st, f"encode_{codec}")
        if d and "per_frame" in d:
            per_item(f"encode_{codec}", f"encode {codec.upper()} 512² (aiortc), "
                                        f"{d.get('kbps_at_25fps')} kbps",
                     runtime="libvpx" if codec == "vp8" else "libx264 (PyAV)")
    return rows


def headline_rows(bench: dict[str, Any]) -> list[list[str]]:
    """(measure, result, target) for the figures people ask for first."""
    lb = _get(bench, "parts", "loopback") or {}
    st = _get(bench, "parts", "stages", "stages") or {}
    rows: list[list[str]] = []
    m = _get(lb, "stages", "mirror")
    if m and "onset_latency" in m:
        lat = m["onset_latency"]
        rows.append(["speech onset → mouth motion (p50 / p95 / p99)",
                     f"{_ms(lat.get('p50_ms'))} / {_ms(lat.get('p95_ms'))} / "
                     f"{_ms(lat.get('p99_ms'))} (n={lat.get('n')}, missed "
                     f"{m.get('onsets_missed')})", "p50 ≤ 250 ms"])
        v = m.get("video") or {}
        rows.append(["delivered fps / p95 inter-frame gap",
                     f"{_num(v.get('fps'))} fps / {_ms(v.get('gap_p95_ms'))}", "25 fps, ≤ 60 ms"])
        off = m.get("av_offset") or {}
        rows.append(["receiver A/V offset (p50 / p95; + = video late)",
                     f"{_ms(off.get('p50_ms'))} / {_ms(off.get('p95_ms'))}", "≤ 40 ms"])
    s = _get(lb, "stages", "session_start")
    if s and s.get("n"):
        rows.append(["session start → first frame (p50 / max)",
                     f"{_ms(s.get('p50_ms'))} / {_ms(s.get('max_ms'))} (n={s.get('n')})",
                     "≤ 1 s"])
    i = _get(lb, "stages", "interrupt")
    if i and "to_idle_match" in i:
        a = i["to_idle_match"]
        rows.append(["interrupt → idle face (p50 / max)",
                     f"{_ms(a.get('p50_ms'))} / {_ms(a.get('max_ms'))} (n={a.get('n')})",
                     "≤ 100 ms"])
    c = _get(lb, "stages", "capacity")
    if c and "real_time_sessions" in c:
        rows.append(["concurrent real-time sessions (fps ≥ 24, p95 onset ≤ 1.5× one session's)",
                     f"{c['real_time_sessions']} ({c.get('stopped', 'ramp ended')})", "—"])
        rps = c.get("rss_per_session_mib") or {}
        first = _first_session_mib(lb)
        rows.append(["server memory per session (RSS slope over the ramp; first session on "
                     "a fresh server)", f"{_num(rps.get('slope'), '{:.0f} MiB')}; "
                     f"{_num(first, '{:.0f} MiB')}", "—"])
    r = _get(st, "renderer", "per_frame_best_of_3", "median_ms")
    if r is not None:
        rows.append(["renderer, one 512² frame on one core (best of 3, median)", _ms(r, 1),
                     "≤ 5 ms"])
    g = _get(st, "motion_generator", "runtimes", "ort-cpu")
    if g:
        rows.append(["learned generator per window, ORT CPU (batch 1 / 16)",
                     f"{_ms(_get(g, '1', 'per_window_ms'), 2)} / "
                     f"{_ms(_get(g, '16', 'per_window_ms'), 2)}", "—"])
    o = _get(st, "offline_render")
    if o and "baseline" in o:
        learned = _get(o, "learned", "x_realtime")
        rows.append(["offline render speed (× real time; baseline / learned driver)",
                     f"{o['baseline']['x_realtime']}×"
                     + (f" / {learned}×" if learned is not None else ""), "> 1×"])
    return rows


def ours_vs_anchors(bench: dict[str, Any]) -> list[list[str]]:
    lb = _get(bench, "parts", "loopback") or {}
    mach = bench.get("machine") or {}
    rows = [[name, claim, hw, "published, not measured here"] for name, claim, hw in ANCHORS]
    fps = _get(lb, "stages", "mirror", "video", "fps")
    lat = _get(lb, "stages", "mirror", "onset_latency", "p50_ms")
    start = _get(lb, "stages", "session_start", "p50_ms")
    cap = _get(lb, "stages", "capacity", "real_time_sessions")
    parts = ["512² crop"]
    if fps is not None:
        parts.append(f"{fps:.1f} fps delivered (25 fps by design)")
    if lat is not None:
        parts.append(f"onset → mouth p50 {lat:.0f} ms")
    if start is not None:
        parts.append(f"session start p50 {start:.0f} ms")
    if cap is not None:
        parts.append(f"{cap} real-time session(s)")
    gpu = mach.get("gpu")
    hw = (f"{mach.get('cpu', '?')}, {mach.get('cores', '?')} cores, "
          + ("GPU: " + ", ".join(g["name"] for g in gpu) if gpu else "no GPU"))
    rows.append(["Vivify (this run)", "; ".join(parts), hw, "measured here, end to end "
                 "over loopback WebRTC"])
    return rows


def saturation_note(bench: dict[str, Any]) -> list[str]:
    """What limits capacity here, from the evidence the run has: the CPU each side used at the
    first failing level, and the per-session CPU the stage costs predict."""
    lb = _get(bench, "parts", "loopback") or {}
    st = _get(bench, "parts", "stages", "stages") or {}
    cores = (bench.get("machine") or {}).get("cores") or 1
    out: list[str] = []
    per_frame = {k: _get(st, *path) for k, path in {
        "driver": ("baseline_driver", "per_frame", "median_ms"),
        "render": ("renderer", "per_frame", "median_ms"),
        "encode VP8": ("encode_vp8", "per_frame", "median_ms")}.items()}
    if all(v is not None for v in per_frame.values()):
        total = sum(v for v in per_frame.values() if v is not None)
        cps = total * 25 / 1e3
        out.append(f"- From the stage costs, one session's media work (driver + render + VP8 "
                   f"encode = {total:.1f} ms per frame × 25 fps) needs {cps:.2f} cores, so "
                   f"{cores} cores could carry at most ~{cores / cps:.1f} sessions before "
                   "RTP/DTLS, Opus, pacing and the benchmark's own decoding.")
    levels = _get(lb, "stages", "capacity", "levels") or []
    for lv in levels:
        cpu = lv.get("cpu") or {}
        if cpu.get("cores_server") is None:
            continue
        n = lv["sessions"]
        out.append(f"- {n} session(s), try {lv.get('attempt', 1)}: "
                   f"{'holds' if lv.get('real_time') else 'fails'}; server "
                   f"{cpu['cores_server']:.2f} cores ({cpu['cores_server'] / n:.2f} per "
                   f"session), loopback client {_num(cpu.get('cores_client'))}, other "
                   f"programs {_num(cpu.get('cores_others'))}, machine busy "
                   f"{_num(cpu.get('cores_busy'))} of {cores}.")
    held = [lv for lv in levels if lv.get("real_time")
            and _get(lv, "cpu", "cores_server") is not None]
    if held and all(v is not None for v in per_frame.values()):
        top = held[-1]
        measured = top["cpu"]["cores_server"] / top["sessions"]
        predicted = sum(v for v in per_frame.values() if v is not None) * 25 / 1e3
        out.append(f"- Measured: the server spent {measured:.2f} cores per session at "
                   f"{top['sessions']} session(s) against {predicted:.2f} predicted by the "
                   f"stages; the other {max(0.0, measured - predicted):.2f} cores per session "
                   "is what the stages do not time: the per-frame watermark stamp, aiortc's "
                   "transport (RTP packetising, "
                   "SRTP, Opus decoding of the microphone and encoding of the returned "
                   "audio), resampling, pacing and the asyncio loop.")
    fails = [lv for lv in levels if not lv.get("real_time")]
    if fails:
        cpu = fails[0].get("cpu") or {}
        busy = cpu.get("cores_busy")
        if busy is not None and busy >= 0.9 * cores:
            out.append(f"- Verdict: at {fails[0]['sessions']} sessions the CPU is saturated "
                       f"({busy:.2f} of {cores} cores busy): CPU-bound. The server's share is what "
                       "a production host would see; the client's (decoding every session's "
                       "video) and other programs' shares would not be there.")
        elif busy is not None:
            out.append(f"- Verdict: at {fails[0]['sessions']} sessions the machine was only "
                       f"{busy:.2f} of {cores} cores busy, so the limit is not raw CPU: look at "
                       "the event loop (one thread encodes and sends every session's "
                       "frames) and the server's late/dropped counters in the JSON.")
    return out


# ============================================================================ document


def write_report(bench: dict[str, Any], out_dir: Path) -> Path:
    """Write ``report.md`` and its PNGs into ``out_dir``; return the markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lb = _get(bench, "parts", "loopback") or {}
    mach = bench.get("machine") or {}
    made: dict[str, bool] = {}
    made["latency_cdf"] = plot_latency_cdf(lb, out_dir / PLOTS["latency_cdf"])
    made["fps"] = plot_fps(lb, out_dir / PLOTS["fps"])
    made["capacity"] = plot_capacity(lb, out_dir / PLOTS["capacity"])
    made["rss"] = plot_rss(_get(lb, "memory", "rss_series") or [], out_dir / PLOTS["rss"],
                           "Server RSS over the loopback run (all stages)")
    gpu = mach.get("gpu")
    v = mach.get("versions") or {}
    lines = [f"# Vivify benchmark: {bench.get('mode', '?')} run, {mach.get('time_utc', '?')}", ""]
    lines += [f"- git `{mach.get('git')}`; settings: mode `{bench.get('mode')}`, parts "
              f"{', '.join(bench.get('parts_run', []))}; total {bench.get('total_s')} s",
              f"- machine: {mach.get('cpu')}, {mach.get('cores')} cores "
              f"({mach.get('affinity')} usable), {mach.get('memory_gib')} GiB; GPU: "
              + (", ".join(f"{g['name']} ({g['memory']})" for g in gpu) if gpu
                 else "none detected (no nvidia-smi)"),
              f"- runtimes: ONNX Runtime providers {mach.get('ort_providers')}; accelerated "
              f"ones used: {mach.get('accelerated_runtimes') or 'none'}",
              "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
              f"- load average at start: {mach.get('loadavg_at_start')}"]
    others = [c["cores_others"] for c in _iter_cpu(lb) if c.get("cores_others") is not None]
    if others:
        lines.append(f"- CPU taken by *other programs* during the loopback stages: "
                     f"{min(others):.2f}–{max(others):.2f} of {mach.get('cores')} cores "
                     "(a shared machine moves every number below)")
    failed = bench.get("failed") or []
    lines.append(f"- failed: **{', '.join(failed)}** (details at the end)" if failed
                 else "- failed: nothing")
    lines += ["", "## Headline", ""]
    lines += _table(["measure", "result", "target"], headline_rows(bench)) or ["(no data)"]
    lines += ["", "## Published figures of related systems beside ours", "",
              "The first three rows are the projects' own published claims, quoted as they "
              "state them; **published, not measured here**, on other hardware and with their "
              "own definitions of latency. Only the last row was measured, on this machine.",
              ""]
    lines += _table(["system", "figure", "hardware", "source"], ours_vs_anchors(bench))
    stages = _get(bench, "parts", "stages") or {}
    lines += ["", "## Per-stage cost", "",
              "One core (`taskset -c 0`, one BLAS/OpenCV thread). \"Share\" is the fraction of "
              "the 40 ms a 25 fps frame allows (for the generator: of the window's frames). "
              "Batching applies only to the generator; the rest is per-session work with no "
              "batch API, so a batch of N costs N×.", ""]
    rows = stage_rows(stages)
    lines += (_table(["stage", "runtime", "batch", "median / p95 per call", "per item",
                      "share"], rows) if rows else ["(stages did not run)"])
    skipped = _get(stages, "stages", "motion_generator", "runtimes_skipped") or {}
    if skipped:
        lines += ["", "Generator runtimes not run (detected absent, never assumed): "
                  + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + "."]
    graph = _get(stages, "stages", "renderer_graph") or {}
    if graph.get("skipped"):
        lines += ["", f"Renderer graph (batched, for GPU runtimes) not run: {graph['skipped']}."]
    elif graph.get("runtimes_skipped"):
        lines += ["", "Renderer-graph runtimes not run: " + "; ".join(
            f"{k}: {v}" for k, v in graph["runtimes_skipped"].items()) + "."]
    prep = _get(stages, "stages", "prepare") or {}
    if "prepare_512_s" in prep:
        lines += ["", f"Avatar preparation: {prep['prepare_512_s']} s for 512²"
                  + (f", {prep['prepare_4000x3000_s']} s for a 4000×3000 photo"
                     if "prepare_4000x3000_s" in prep else "")
                  + f"; renderer set-up {prep.get('renderer_init_s')} s."]
    off = _get(stages, "stages", "offline_render") or {}
    if "baseline" in off:
        lines += ["", "Offline render (`vivify.streamer.offline.render.render_file`, "
                  f"{off['baseline']['audio_s']} s sentence): "
                  + ", ".join(f"{k} driver {d['x_realtime']}× real time ({d['wall_s']} s)"
                              for k, d in off.items() if isinstance(d, dict))
                  + "."]
    lines += ["", "## Streaming through the real server", "",
              "The server in a child process, aiortc peers in this process over 127.0.0.1 "
              "(the client's decoding shares the same cores). Method: bench/loopback.py's "
              "docstring.", ""]
    lines += _img(made, "latency_cdf", "Onset latency CDF")
    lines += _img(made, "fps", "Delivered fps over time")
    lines += ["", "## Capacity", ""]
    cap = _get(lb, "stages", "capacity") or {}
    if cap.get("levels"):
        lines += [f"Criteria: {cap.get('criteria')}. Stopped: {cap.get('stopped', '—')}.", ""]
        lines += _table(["sessions", "try", "real time", "fps (slowest)", "onset p95",
                         "missed", "server RSS median", "cores server / client / others"],
                        [[str(lv["sessions"]), str(lv.get("attempt", 1)),
                          "yes" if lv.get("real_time") else "no", _num(lv.get("fps_min")),
                          _ms(_get(lv, "onset_latency", "p95_ms")),
                          str(lv.get("onsets_missed")),
                          _num(_get(lv, "rss_mib", "median"), "{:.0f} MiB"),
                          f"{_get(lv, 'cpu', 'cores_server')} / "
                          f"{_get(lv, 'cpu', 'cores_client')} / "
                          f"{_get(lv, 'cpu', 'cores_others')}"] for lv in cap["levels"]])
        lines += ["", *_img(made, "capacity", "Capacity curve")]
        lines += ["### What limits capacity here", "", *saturation_note(bench)]
    else:
        lines += ["(capacity ramp did not run)"]
    lines += ["", "## Memory", ""]
    rps = cap.get("rss_per_session_mib") or {}
    mem = lb.get("memory") or {}
    if mem.get("rss_series"):
        lines += [f"Server RSS: {mem.get('rss_first_mib')} MiB after start-up, peak "
                  f"{mem.get('rss_peak_mib')} MiB, {mem.get('rss_last_mib')} MiB at the end. "
                  f"Per session: {_num(rps.get('slope'), '{:.0f} MiB')} (slope of median "
                  f"RSS against sessions over the capacity ramp); the first session on the "
                  f"fresh server added {_num(_first_session_mib(lb), '{:.0f} MiB')} "
                  "(including first-use allocations). Python keeps freed memory, so RSS "
                  "steps up with each new high-water mark and seldom comes back down.", ""]
        lines += _img(made, "rss", "Server RSS")
    else:
        lines += ["(no loopback memory samples in this run)", ""]
    lines += ["Flatness over a long run with sessions cycling is `make bench-soak` (10 min, "
              "not part of this run; bench/soak.py)."]
    lines += ["", "## Failures", ""]
    if failed:
        for name in failed:
            lines.append(f"- **{name}**: `{_error_of(bench, name)}`")
    else:
        lines.append("None.")
    lines += ["", "## Raw data", "",
              "[bench.json](bench.json) (this run, with every stage's settings), "
              "[stages.json](stages.json), [loopback.json](loopback.json).", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def _first_session_mib(loopback: dict[str, Any]) -> float | None:
    """Median RSS during the mirror stage minus the fresh server's RSS before it."""
    r = _get(loopback, "stages", "mirror", "rss_mib") or {}
    if r.get("median") is None or r.get("before") is None:
        return None
    return float(r["median"] - r["before"])


def _img(made: dict[str, bool], key: str, alt: str) -> list[str]:
    return [f"![{alt}]({PLOTS[key]})", ""] if made.get(key) else [f"({alt}: no data)", ""]


def _iter_cpu(loopback: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for st in (loopback.get("stages") or {}).values():
        if isinstance(st, dict) and isinstance(st.get("cpu"), dict):
            out.append(st["cpu"])
    return out


def _error_of(bench: dict[str, Any], name: str) -> str:
    """The recorded error of a failed ``part`` or ``part.stage``, first line, ≤ 200 chars."""
    part, _, stage = name.partition(".")
    d = _get(bench, "parts", part, "stages", stage) if stage else None
    err = (d or {}).get("error") or _get(bench, "part_errors", part) or "?"
    return str(err).splitlines()[0][:200]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_json", type=Path)
    args = parser.parse_args(argv)
    path = write_report(json.loads(args.bench_json.read_text()), args.bench_json.parent)
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
