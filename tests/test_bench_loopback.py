"""bench/loopback.py: its signals (bench/signals.py) and frame analysis (bench/loopback_analysis.py)
on synthetic data, and one short real run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import loopback as lb
from bench import loopback_analysis as la
from bench import signals as sg
from bench.harness import peers, procfs, results

RATE = peers.SEND_RATE


def _burst(seconds: float, seed: int = 0) -> np.ndarray:
    return sg.synthetic_vowels(seconds, RATE, seed=seed) * 0.2


def test_detect_onsets_finds_bursts_after_silence() -> None:
    x = np.zeros(RATE * 6, np.float32)
    starts = [int(0.5 * RATE), int(2.0 * RATE), int(4.1 * RATE)]
    for s in starts:
        x[s:s + RATE // 2] = _burst(0.5)
    x[int(2.7 * RATE):int(2.8 * RATE)] = _burst(0.1)  # 0.2 s after a burst: not an onset
    found = sg.detect_onsets(x, RATE)
    assert len(found) == 3
    for got, want in zip(found, starts, strict=True):
        assert abs(got - want) <= sg.ONSET_WIN_S * RATE
    assert sg.detect_onsets(np.zeros(RATE, np.float32), RATE) == []
    assert sg.detect_onsets(np.zeros(10, np.float32), RATE) == []


def test_cycle_signal_places_bursts_the_detector_recovers() -> None:
    clips = [np.concatenate([_burst(0.7, i), np.zeros(int(0.3 * RATE), np.float32)])
             for i in range(3)]
    x, starts = sg.cycle_signal(12.0, RATE, clips, lead_s=2.0, silence_s=1.5)
    assert x.size == 12 * RATE
    assert starts[0] == 2 * RATE and np.diff(starts).tolist() == [int(2.5 * RATE)] * 3
    assert sg.detect_onsets(x, RATE) == starts


def test_speech_clips_are_one_second_and_start_voiced() -> None:
    clips = sg.speech_clips(16_000)
    assert len(clips) == len(sg.PHRASES)
    for c in clips:
        assert c.shape == (16_000,) and c.dtype == np.float32
        assert np.abs(c).max() <= 0.951
        assert sg.detect_onsets(c, 16_000, gap_s=0.0)[0] <= 80  # voiced within 5 ms


def _idle_crop(rng: np.random.Generator) -> np.ndarray:
    r0, r1, c0, c1 = la.MOUTH_BOX
    base = np.full((r1 - r0, c1 - c0), 120.0, np.float32)
    return base + rng.normal(0, 0.5, base.shape).astype(np.float32)


def _open_mouth(crop: np.ndarray, amount: float) -> np.ndarray:
    out = crop.copy()
    h = int(amount * 30)
    out[45 - h:45 + h, 30:100] = 40.0  # a dark, growing mouth opening
    return out


def test_mouth_motion_detection_ignores_idle_noise_and_single_spikes() -> None:
    rng = np.random.default_rng(1)
    crops = [_idle_crop(rng) for _ in range(60)]
    crops[20] = crops[20] + 6.0  # one codec hiccup: a lone spike
    for i in range(40, 60):
        crops[i] = _open_mouth(crops[i], min(1.0, (i - 39) / 4) * (0.6 + 0.4 * (i % 2)))
    activity = la.mouth_activity(crops)
    assert activity[0] == 0.0
    thr = la.calibrate_threshold(activity[1:35])
    assert 1.0 <= thr < activity[41]
    times = np.arange(60) * 0.04
    assert la.first_above(times, activity, thr, 0.0, 10.0) == 40
    assert la.first_above(times, activity, thr, 0.0, 1.0) is None
    with pytest.raises(ValueError):
        la.calibrate_threshold(np.zeros(0))


def test_aligned_distance_removes_head_sway() -> None:
    rng = np.random.default_rng(2)
    face = rng.uniform(0, 255, (90, 130)).astype(np.float32)
    shifted = np.roll(face, (3, -2), axis=(0, 1))
    assert la.aligned_distance(shifted, face) < 1e-6
    assert la.aligned_distance(_open_mouth(face, 1.0), face) > 10


def test_first_run_skips_held_frames() -> None:
    t = np.arange(10) * 0.04
    mask = np.array([0, 1, 1, 0, 1, 1, 1, 1, 1, 1], bool)
    assert la.first_run(mask, t, 0.0, 3) == 4
    assert la.first_run(mask, t, 0.0, 2) == 1
    held = np.zeros(10, bool)
    held[3] = True  # a repeated frame neither counts nor breaks the run
    assert la.first_run(mask, t, 0.0, 3, skip=held) == 1
    assert la.first_run(mask, t, 0.3, 3) is None


def test_idle_for_good_and_held_frames_in_motion_runs() -> None:
    t = np.arange(12) * 0.04
    idle = np.array([0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1], bool)  # a pause, then for good
    assert la.idle_for_good(idle, t, 0.0, 1.0) == 5
    assert la.idle_for_good(np.ones(12, bool), t, 0.1, 1.0) == 3
    assert la.idle_for_good(~idle, t, 0.0, 1.0) is None
    skip = np.zeros(12, bool)
    skip[3:5] = True  # the busy frames were held repeats: not evidence either way
    assert la.idle_for_good(idle, t, 0.0, 1.0, skip=skip) == 1
    spikes = np.array([0, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1], bool)
    assert la.in_runs(spikes, 3).tolist() == [False, False, False, True, True, True,
                                              False, False, False, False, False, False]
    assert la.in_runs(spikes, 3, skip=~spikes & (t > 0.3)).sum() == 7  # 7..11 joined up
    activity = np.array([0.3, 0.3, 5.0, 0.0, 6.0, 7.0, 0.0, 0.0, 5.0, 0.3])
    assert la.first_above(t[:10], activity, 1.0, 0.0, 1.0) == 2  # held frames do not break it
    assert la.first_above(t[:10], activity, 1.0, 0.0, 0.05) is None


def test_frame_rate_and_percentiles() -> None:
    t = np.arange(0, 10, 0.04)
    t = np.concatenate([t[:100], t[101:]])  # one lost frame: an 80 ms gap
    fr = results.frame_rate(t)
    assert fr["fps"] == pytest.approx(25.0, abs=0.2)
    assert fr["gap_max_ms"] == pytest.approx(80.0, abs=0.1)
    assert fr["gap_p50_ms"] == pytest.approx(40.0, abs=0.1)
    assert results.frame_rate(t[:2])["fps"] is None
    p = results.percentiles([100.0, 200.0, 300.0])
    assert p["p50_ms"] == 200.0 and p["n"] == 3
    assert results.percentiles([])["p50_ms"] is None


def test_freezes_are_located_relative_to_marks() -> None:
    t = np.concatenate([np.arange(0, 2, 0.04), np.arange(2.5, 4, 0.04)])
    got = la.freezes(t, {"push": [1.0, 3.0], "interrupt": []})
    assert len(got) == 1
    assert got[0]["ms"] == pytest.approx(540.0, abs=1.0)
    assert got[0]["after_push_ms"] == pytest.approx(960.0, abs=1.0)
    assert got[0]["after_interrupt_ms"] is None


def test_analyse_mirror_recovers_a_known_latency() -> None:
    """Synthetic peer: onsets sent at known times, the mouth opens 300 ms later."""
    clips = [_burst(1.0, i) for i in range(2)]
    signal, starts = sg.cycle_signal(12.0, RATE, clips)
    peer = peers.Peer(signal)
    assert peer.track is not None
    t0 = 100.0
    frame = peers.SEND_FRAME
    peer.track.sent = [t0 + k * frame / RATE for k in range(signal.size // frame)]
    sends = [t0 + s / RATE for s in starts]
    rng = np.random.default_rng(3)
    peer.t_post = t0 - 0.5
    for i in range(int(12 / 0.04)):
        at = t0 + 0.2 + i * 0.04
        crop = _idle_crop(rng)
        for s in sends:
            if s + 0.3 <= at < s + 1.3:
                crop = _open_mouth(crop, 0.3 + 0.7 * ((i % 3) / 2))
        peer.video_t.append(at)
        peer.crops.append(crop)
    # Returned audio: the same bursts, arriving 330 ms after they were sent (48 kHz, 20 ms).
    for k in range(int(12 / 0.02)):
        peer.audio_t.append(t0 + 0.33 + k * 0.02)
        peer.audio.append(signal[k * 960:(k + 1) * 960].copy())
    got = la.analyse_mirror(peer, end=t0 + 12.0)
    assert got["onsets_sent"] == len(starts) and got["onsets_missed"] == 0
    for v in got["onset_latency_each_ms"]:
        assert 300.0 <= v <= 340.0 + 1e-6  # the first moving frame, within one frame period
    assert got["start_ms"] == pytest.approx(700.0, abs=1.0)
    assert got["av_offset"]["p50_ms"] == pytest.approx(0.0, abs=45.0)
    assert got["video"]["fps"] == pytest.approx(25.0, abs=0.1)


def test_settings_and_summary_table() -> None:
    s = lb.settings_from(lb.parse_args(["--quick", "--stages", "mirror,capacity"]))
    assert s.quick and s.mirror_s == 10.0 and s.stages == ("mirror", "capacity")
    with pytest.raises(SystemExit):
        lb.settings_from(lb.parse_args(["--stages", "warp"]))
    report = {"stages": {"mirror": {"onset_latency": {"p50_ms": 300.0, "p95_ms": 400.0, "n": 3},
                                    "onsets_missed": 0, "video": {"fps": 25.0},
                                    "av_offset": {}, "start_ms": 200.0,
                                    "cpu": {"cores_others": 0.5}}},
              "failed": ["interrupt"]}
    rows = la.summary_rows(report)
    assert rows[0][1].startswith("300 ms / 400 ms")
    assert any(r[0] == "stage interrupt" for r in rows)
    assert procfs.CpuMeter(lambda: []).read()["cores_busy"] is not None


@pytest.mark.slow
def test_short_real_run(face_models: Path, tmp_path: Path) -> None:
    """The real server in a child process and real aiortc peers, ~25 s."""
    out = tmp_path / "lb.json"
    rc = lb.main(["--quick", "--stages", "mirror,interrupt", "--mirror-seconds", "7",
                  "--interrupts", "1", "--budget", "60", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["failed"] == [], report
    mirror = report["stages"]["mirror"]
    # Loose bounds: this checks the plumbing, not the figures (the VM is shared and noisy).
    assert mirror["video"]["fps"] > 10
    assert mirror["start_ms"] is not None and mirror["start_ms"] < 5000
    assert mirror["onsets_sent"] >= 1 and mirror["idle_activity"]["n"] > 10
    assert len(report["stages"]["interrupt"]["repetitions"]) == 1
    git = report["machine"]["git"]
    assert git is None or len(git.removesuffix("+dirty")) == 40
    assert rc == 0
