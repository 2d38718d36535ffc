"""What the loopback benchmark reads from the frames it received: the mouth's motion, when it
starts after a speech onset, when the face is idle again after an interrupt.

Each received video frame's arrival time and the luma of the default avatar's mouth box (rows
290–380, columns 190–320 of the 512² crop) are kept; mouth activity is the mean absolute luma
change of that box from the previous frame. Frames the server held (exact repeats, activity
below ``HELD``) neither count nor break a run. The idle threshold is calibrated on frames that
arrive in the silent parts: ``max(median + 10 × MAD, 2.5 × p90, 1.0)``, robust to the few
speech frames a stall pushes into those windows. Also here: the table printed at the end.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.peers import SEND_FRAME, SEND_RATE, Peer
from bench.harness.results import fps_series, frame_rate, percentiles
from bench.harness.runner import log
from bench.signals import SPEECH_S, detect_onsets

MOUTH_BOX = (290, 380, 190, 320)  # rows, columns of the mouth in the default avatar's 512² crop
IDLE_SETTLE_S = 0.8  # after a burst ends, frames this much later count as idle
MOTION_SEARCH_S = SPEECH_S + 0.5  # look this long after an onset for the mouth to move
MOTION_RUN = 3  # frames in a row above the threshold: the mouth moves (a one-frame glitch
#                makes two high differences, in and out)
ALIGN_MARGIN = 6  # px of head sway searched when comparing a mouth with the idle one
SETTLED_S = (1.2, 2.4)  # after an interrupt: the face has settled into idle in this window
HELD = 1e-3  # activity below this: an exact repeat of the previous frame (a held frame)
IDLE_RUN = 5  # frames in a row that must look idle after an interrupt


# ============================================================================ frames


def mouth_luma(frame: Any) -> np.ndarray:
    """The mouth box of a decoded ``av.VideoFrame`` as float32 luma (no RGB conversion)."""
    r0, r1, c0, c1 = MOUTH_BOX
    if frame.format.name in ("yuv420p", "yuvj420p", "nv12"):
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        return luma[r0:r1, c0:c1].astype(np.float32)
    return frame.to_ndarray(format="gray")[r0:r1, c0:c1].astype(np.float32)


def mouth_activity(crops: Sequence[np.ndarray]) -> np.ndarray:
    """Mean absolute change of each mouth crop from the previous one (0 for the first)."""
    out = np.zeros(len(crops), np.float64)
    for i in range(1, len(crops)):
        out[i] = float(np.abs(crops[i] - crops[i - 1]).mean())
    return out


def calibrate_threshold(idle_activity: np.ndarray, floor: float = 1.0) -> float:
    """Activity above the idle noise: ``max(median + 10 × MAD, 2.5 × p90, floor)``.

    Robust statistics, so a few speech frames that land in an "idle" window (after a stall)
    cannot inflate it; idle frames here measure ~0.4 median, ~0.6 p90, speech frames ~8."""
    a = np.asarray(idle_activity, np.float64)
    if a.size == 0:
        raise ValueError("no idle frames to calibrate on")
    med = float(np.median(a))
    mad = float(np.median(np.abs(a - med)))
    return max(med + 10 * mad, 2.5 * float(np.percentile(a, 90)), floor)


def first_above(times: np.ndarray, values: np.ndarray, threshold: float, start: float,
                end: float, run: int = MOTION_RUN) -> int | None:
    """Index of the first sample with ``start <= time <= end`` that begins ``run`` samples in a
    row above ``threshold`` (a lone idle spike does not count as motion). Exact repeats
    (value 0: the server held a frame) neither count nor break the run."""
    above = values > threshold
    held = values < HELD
    return first_run(above, times, start, run, skip=held, end=end)


def first_run(mask: np.ndarray, times: np.ndarray, start: float, run: int,
              skip: np.ndarray | None = None, end: float = math.inf) -> int | None:
    """Index of the first ``True`` with ``start <= time <= end`` that begins ``run`` ``True``s.

    Entries where ``skip`` is set (repeated frames) neither count nor break a run."""
    begin = int(np.searchsorted(times, start))
    count, first = 0, -1
    for i in range(begin, mask.size):
        if skip is not None and skip[i]:
            continue
        if mask[i]:
            if count == 0:
                if times[i] > end:
                    return None
                first = i
            count += 1
            if count == run:
                return first
        else:
            count = 0
    return None


def in_runs(mask: np.ndarray, run: int, skip: np.ndarray | None = None) -> np.ndarray:
    """Which entries belong to ``run`` or more ``True``s in a row (``skip``ped ones ignored):
    sustained motion, not a one-frame spike."""
    out = np.zeros(mask.size, bool)
    members: list[int] = []
    for i in range(mask.size + 1):
        if i < mask.size and skip is not None and skip[i]:
            continue
        if i < mask.size and mask[i]:
            members.append(i)
            continue
        if len(members) >= run:
            out[members] = True
        members = []
    return out


def idle_for_good(idle: np.ndarray, times: np.ndarray, start: float, until: float,
                  skip: np.ndarray | None = None) -> int | None:
    """Index of the first frame at or after ``start`` from which every frame up to ``until`` is
    idle (``skip``ped frames aside): when the face returned to idle and stayed there."""
    idx = [i for i in np.flatnonzero((times >= start) & (times <= until))
           if skip is None or not skip[i]]
    if not idx:
        return None
    last_busy = max((k for k, i in enumerate(idx) if not idle[i]), default=-1)
    return int(idx[last_busy + 1]) if last_busy + 1 < len(idx) else None


def aligned_distance(crop: np.ndarray, ref: np.ndarray, margin: int = ALIGN_MARGIN) -> float:
    """Mean absolute difference between ``ref``'s inner box and the best-matching window of
    ``crop`` within ±``margin`` px: the mouth's shape, with the head's sway taken out."""
    inner = ref[margin:ref.shape[0] - margin, margin:ref.shape[1] - margin]
    h, w = inner.shape
    best = math.inf
    for dy in range(2 * margin + 1):
        for dx in range(2 * margin + 1):
            best = min(best, float(np.abs(crop[dy:dy + h, dx:dx + w] - inner).mean()))
    return best


# ============================================================================ the mirror


def onset_sends(peer: Peer) -> list[float]:
    """Send times of the onsets detected in ``peer``'s sent signal (only those sent)."""
    if peer.signal is None or peer.track is None:
        return []
    sent = peer.track.sent
    out = []
    for s in detect_onsets(peer.signal, SEND_RATE):
        k = s // SEND_FRAME
        if k < len(sent):
            out.append(sent[k])
    return out


def returned_onsets(peer: Peer) -> list[float]:
    """Arrival times of the frames holding the onsets of the audio ``peer`` received."""
    if not peer.audio:
        return []
    sizes = np.array([a.size for a in peer.audio])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    times = np.asarray(peer.audio_t)
    x = np.concatenate(peer.audio)
    return [float(times[int(np.searchsorted(starts, s, side="right")) - 1])
            for s in detect_onsets(x, peer.audio_rate)]


def idle_activity(peer: Peer, activity: np.ndarray, sends: Sequence[float]) -> np.ndarray:
    """Activity of the frames that arrived while the sent signal was silent."""
    t = np.asarray(peer.video_t)
    if t.size == 0:
        return np.zeros(0)
    windows = []
    if sends:
        windows.append((t[0] + 0.5, sends[0] + 0.05))
        for a, b in zip(sends, [*sends[1:], t[-1] + 1.0], strict=True):
            windows.append((a + SPEECH_S + IDLE_SETTLE_S, min(b + 0.05, t[-1] + 1.0)))
    else:
        windows.append((t[0] + 0.3, t[-1] + 1.0))
    mask = np.zeros(t.size, bool)
    for lo, hi in windows:
        mask |= (t >= lo) & (t <= hi)
    mask[0] = False
    return activity[mask]


def analyse_mirror(peer: Peer, end: float, threshold: float | None = None) -> dict[str, Any]:
    """Onset latency, A/V offset, frame rate and start time of one mirror peer."""
    t = np.asarray(peer.video_t)
    activity = mouth_activity(peer.crops)
    all_sends = onset_sends(peer)
    sends = [s for s in all_sends if s + MOTION_SEARCH_S <= end]
    idle = idle_activity(peer, activity, all_sends)
    own = calibrate_threshold(idle) if idle.size else None
    thr = threshold if threshold is not None else own
    if thr is None:
        raise RuntimeError("no idle frames to calibrate the mouth threshold on")
    returned = np.asarray(returned_onsets(peer))
    latencies: list[float | None] = []
    offsets: list[float | None] = []
    for s in sends:
        i = first_above(t, activity, thr, s, s + MOTION_SEARCH_S)
        latencies.append(None if i is None else (t[i] - s) * 1e3)
        later = returned[(returned >= s) & (returned <= s + MOTION_SEARCH_S)]
        offsets.append(None if i is None or not later.size else (t[i] - later[0]) * 1e3)
    start = (None if peer.first_video is None or peer.t_post is None
             else (peer.first_video - peer.t_post) * 1e3)
    return {
        "session": peer.session.get("id"), "start_ms": None if start is None else round(start, 1),
        "onsets_sent": len(sends), "onsets_missed": sum(v is None for v in latencies),
        "onset_latency": percentiles([v for v in latencies if v is not None]),
        "onset_latency_each_ms": [None if v is None else round(v, 1) for v in latencies],
        "av_offset": percentiles([v for v in offsets if v is not None]),
        "av_offset_each_ms": [None if v is None else round(v, 1) for v in offsets],
        "video": frame_rate(t), "fps_series": fps_series(t), "threshold": round(thr, 3),
        "own_threshold": None if own is None else round(own, 3),
        "idle_activity": {"n": int(idle.size),
                          "p50": round(float(np.median(idle)), 3) if idle.size else None,
                          "p99": round(float(np.percentile(idle, 99)), 3) if idle.size else None},
        "speech_activity_p50": _speech_activity(t, activity, sends),
        "returned_audio_onsets": int(returned.size), "receiver_errors": peer.errors,
    }


def dump_trace(peer: Peer, path: Path) -> None:
    """Per-frame arrival times and mouth activity, onset send times, returned-audio onsets."""
    np.savez_compressed(path, video_t=np.asarray(peer.video_t),
                        activity=mouth_activity(peer.crops),
                        onset_sends=np.asarray(onset_sends(peer)),
                        returned_onsets=np.asarray(returned_onsets(peer)),
                        crops=np.asarray(peer.crops, np.uint8))


def _speech_activity(t: np.ndarray, activity: np.ndarray, sends: Sequence[float]) -> float | None:
    vals = [activity[(t >= s + 0.3) & (t <= s + SPEECH_S)] for s in sends]
    v = np.concatenate(vals) if vals else np.zeros(0)
    return round(float(np.median(v)), 3) if v.size else None


# ============================================================================ the interrupt


def freezes(times: np.ndarray, marks: dict[str, Sequence[float]],
            over_s: float = 0.2) -> list[dict[str, Any]]:
    """Gaps between received frames longer than ``over_s``, each with its start relative to
    the nearest preceding mark of every kind (e.g. the last push, the last interrupt)."""
    out = []
    for i in np.flatnonzero(np.diff(times) > over_s):
        gap: dict[str, Any] = {"ms": round(float(times[i + 1] - times[i]) * 1e3, 1)}
        for name, ts in marks.items():
            before = [times[i] - m for m in ts if m <= times[i]]
            gap[f"after_{name}_ms"] = round(min(before) * 1e3, 1) if before else None
        out.append(gap)
    return out


def analyse_interrupt(viewer: Peer, t_int: float, threshold: float | None) -> dict[str, Any]:
    """Interrupt → the frame from which the face is idle and stays idle (up to 1.2 s after
    the interrupt, when it has certainly settled), by two criteria.

    *idle match*: the mouth box, head sway aligned away (:func:`aligned_distance`), is within
    ``max(1.5 × d, d + 1.5)`` of the idle state the face settles into (mean of the frames
    1.2–2.4 s after the interrupt), ``d`` the largest distance of those frames to their mean.
    *still*: no motion, i.e. no run of ``MOTION_RUN`` frames above the idle threshold (a lone
    codec spike is not motion). Repeated frames (activity exactly 0: the server held a frame)
    are skipped by both: a frozen speaking face is not idle."""
    t = np.asarray(viewer.video_t)
    crops = viewer.crops[:t.size]
    activity = mouth_activity(crops)
    idle_idx = np.flatnonzero((t >= t_int + SETTLED_S[0]) & (t < t_int + SETTLED_S[1]))
    if idle_idx.size < 3:  # the viewer's video stalled: no idle reference, "still" only
        log("interrupt", f"only {idle_idx.size} viewer frames {SETTLED_S[0]}–{SETTLED_S[1]} s "
                         "after the interrupt: no idle reference")
    dist = np.full(t.size, np.inf)
    idle_range = math.nan
    if idle_idx.size >= 3:
        ref = np.mean([crops[i] for i in idle_idx], axis=0)
        d_idle = max(aligned_distance(crops[i], ref) for i in idle_idx)
        idle_range = max(1.5 * d_idle, d_idle + 1.5)
        for i in np.flatnonzero((t >= t_int - 0.5) & (t <= t_int + SETTLED_S[1])):
            dist[i] = aligned_distance(crops[i], ref)
    if threshold is not None:
        thr = threshold
    elif idle_idx.size >= 3:
        thr = calibrate_threshold(activity[idle_idx])
    else:
        raise RuntimeError("no idle frames to calibrate the mouth threshold on")
    held = activity < HELD
    before = (t >= t_int - 0.5) & (t < t_int)
    after = (t >= t_int) & (t <= t_int + 0.5)
    until = t_int + SETTLED_S[0]
    match = idle_for_good(dist <= idle_range, t, t_int, until, skip=held)
    moving = in_runs(activity > thr, MOTION_RUN, skip=held)
    still = idle_for_good(~moving, t, t_int, until, skip=held)
    first_match = first_run(dist <= idle_range, t, t_int, IDLE_RUN, skip=held)
    return {"to_idle_match_ms": None if match is None else round((t[match] - t_int) * 1e3, 1),
            "to_still_ms": None if still is None else round((t[still] - t_int) * 1e3, 1),
            "first_idle_run_ms": None if first_match is None
            else round((t[first_match] - t_int) * 1e3, 1),
            "mouth_moving_before": bool((activity[before] > thr).any()) if before.any()
            else False,
            "distance_at_interrupt": _last(dist[before]),
            "distance_peak_after": round(float(dist[after].max()), 2) if after.any() else None,
            "held_frames_after": int((held & after).sum()),
            "idle_range": None if math.isnan(idle_range) else round(idle_range, 3),
            "settled_frames": int(idle_idx.size), "threshold": round(thr, 3)}


def _last(v: np.ndarray) -> float | None:
    return round(float(v[-1]), 2) if v.size and np.isfinite(v[-1]) else None


# ============================================================================ capacity


def rss_per_session(levels: Sequence[dict[str, Any]], idle: float | None) -> dict[str, Any]:
    """Server memory one more session costs: the slope of median RSS against the number of
    sessions over the ramp's levels, and level 1's median minus the server's RSS when the ramp
    began. Python keeps freed memory, so a level starts at the earlier stages' high-water mark
    and that delta is a lower bound; the mirror stage's ``rss_mib`` (first session on a fresh
    server) includes first-use allocations and is the upper one."""
    pts = [(lv["sessions"], lv["rss_mib"]["median"]) for lv in levels
           if (lv.get("rss_mib") or {}).get("median") is not None]
    out: dict[str, Any] = {"slope": None, "one_session_delta": None}
    if len({n for n, _ in pts}) >= 2:
        x, y = np.array(pts, np.float64).T
        out["slope"] = round(float(np.polyfit(x, y, 1)[0]), 1)
    one = [m for n, m in pts if n == 1]
    if one and idle is not None:
        out["one_session_delta"] = round(one[0] - idle, 1)
    return out


# ============================================================================ the printed table


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, result, target) rows for the printed table."""
    st = report["stages"]
    rows: list[tuple[str, str, str]] = []

    def ms(d: dict[str, Any] | None, key: str) -> str:
        v = (d or {}).get(key)
        return "—" if v is None else f"{v:.0f} ms"

    m = st.get("mirror", {})
    if m:
        lat = m.get("onset_latency", {})
        rows.append(("speech onset → mouth moves (p50 / p95)",
                     f"{ms(lat, 'p50_ms')} / {ms(lat, 'p95_ms')}  (n={lat.get('n')}, missed "
                     f"{m.get('onsets_missed')})", "p50 ≤ 250 ms"))
        v = m.get("video", {})
        rows.append(("delivered fps / p95 gap", f"{v.get('fps')} fps / {ms(v, 'gap_p95_ms')}  "
                     f"({v.get('seconds')} s)", "25 ± 1 fps, ≤ 60 ms"))
        off = m.get("av_offset", {})
        rows.append(("A/V offset at receiver (p50 / p95, + = video late)",
                     f"{ms(off, 'p50_ms')} / {ms(off, 'p95_ms')}", "≤ 40 ms"))
    s = st.get("session_start", {})
    if s:
        rows.append(("session start → first frame (p50 / max)",
                     f"{ms(s, 'p50_ms')} / {ms(s, 'max_ms')}  (n={s.get('n')})", "≤ 1 s"))
    elif m:
        rows.append(("session start → first frame", ms(m, "start_ms"), "≤ 1 s"))
    i = st.get("interrupt", {})
    if i:
        a, b = i.get("to_idle_match", {}), i.get("to_still", {})
        rows.append(("interrupt → idle face (p50 / max)",
                     f"match {ms(a, 'p50_ms')} / {ms(a, 'max_ms')}; still {ms(b, 'p50_ms')} / "
                     f"{ms(b, 'max_ms')}  (n={a.get('n')})", "≤ 100 ms"))
    c = st.get("capacity", {})
    if c:
        rows.append(("concurrent real-time sessions (512², 25 fps)",
                     f"{c.get('real_time_sessions')}  (server estimate "
                     f"{c.get('server_estimate')})", "—"))
        for lv in c.get("levels", []):
            cpu = lv.get("cpu") or {}
            rows.append((f"  {lv['sessions']} session(s), try {lv.get('attempt', 1)}",
                         f"{'holds' if lv.get('real_time') else 'fails'}: fps min "
                         f"{lv['fps_min']}, onset p95 {ms(lv['onset_latency'], 'p95_ms')}, "
                         f"missed {lv['onsets_missed']}; server {cpu.get('cores_server')} / "
                         f"client {cpu.get('cores_client')} / others "
                         f"{cpu.get('cores_others')} cores", "—"))
    busy = [v["cpu"]["cores_others"] for v in st.values()
            if isinstance(v, dict) and (v.get("cpu") or {}).get("cores_others") is not None]
    if busy:
        rows.append(("CPU taken by other programs during the stages",
                     f"{min(busy):.2f}–{max(busy):.2f} of {os.cpu_count()} cores", "0"))
    for name in report.get("failed", []):
        rows.append((f"stage {name}", "FAILED", st.get(name, {}).get("error", "")[:60]))
    return rows


def print_table(report: dict[str, Any]) -> None:
    rows = summary_rows(report)
    w0 = max((len(r[0]) for r in rows), default=10)
    w1 = max((len(r[1]) for r in rows), default=10)
    print(f"{'measure':<{w0}}  {'result':<{w1}}  target")
    for a, b, c in rows:
        print(f"{a:<{w0}}  {b:<{w1}}  {c}")
