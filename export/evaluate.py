"""``python -m vivify.export.evaluate`` (``make eval``): lip-sync and life metrics on held-out
voices.

Every driver runs through the run-time's streaming object (:class:`MotionGenerator`) — the
student on ONNX Runtime exactly as served, the teacher through the same object with a torch
runner (32 guided Euler steps) — or through :class:`BaselineDriver`. Sessions are advanced in
lock-step with one batched call per round, the way the server's scheduler does it.

Metrics (labels are the corpus's phoneme-derived targets, frames at 25 fps):
- ``jaw_corr``: Pearson correlation of predicted and label ``jaw_open`` over all speech-clip
  frames.
- ``bilabial_recall``: share of /p b m/ frames where the lips are closed within ±1 frame;
  closed = ``lip_press ≥ 0.4`` or ``jaw_open ≤ 0.05``.
- ``offset_frames``: lag (−5..5) of the peak cross-correlation of predicted vs label jaw,
  summed over clips; positive = the prediction is late.
- ``silent_closure``: share of silent frames (no speech phoneme within ±100 ms) with
  ``jaw_open ≤ 0.1``.
- ``blink_rate_per_min``: upward crossings of ``blink_l`` through 0.5 per minute.
- ``head_spread``: standard deviation of head yaw/pitch/roll (motion units).
- ``jitter_ratio``: mean frame-to-frame motion change (L2 over all dims) across window
  boundaries over the same inside windows (W from the student config).
- ``sung_jaw_mean`` / ``sung_jaw_flap``: mean jaw and its frame-to-frame change in sustained
  sung vowels (≥ 0.3 s from the ends).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from vivify.engines.audio.audio_io import SAMPLES_PER_FRAME
from vivify.engines.motion.baseline import BaselineConfig, BaselineDriver
from vivify.engines.motion.generator import (
    DEFAULT_MANIFEST,
    Calibration,
    GeneratorRunner,
    GeneratorSpec,
    MotionGenerator,
    WindowRequest,
)
from vivify.engines.motion.vector import INDEX

CLOSED_PRESS, CLOSED_JAW, SILENT_JAW = 0.4, 0.05, 0.1
MAX_LAG = 5
BARS = {"jaw_corr": 0.75, "bilabial_recall": 0.85, "offset_frames": 1, "silent_closure": 0.95,
        "jitter_ratio": 1.2, "teacher_gap": 0.05, "compute_ratio": 10.0}


class WindowRunner(Protocol):
    """What :class:`MotionGenerator` uses of its runner: the spec, the sampling (noise scale
    and memory), the calibration and one batched call. The student
    (:class:`GeneratorRunner`) and the teacher (:class:`TorchRunner`) both are one."""

    noise_scale: np.ndarray
    noise_memory: float
    calibration: Calibration

    @property
    def spec(self) -> GeneratorSpec: ...

    def infer_requests(self, requests: Sequence[WindowRequest]) -> list[np.ndarray]: ...


def streaming_session(runner: WindowRunner, seed: int) -> MotionGenerator:
    """The run-time's per-session object on any window runner. MotionGenerator is annotated
    with the student's class, but reads only what the Protocol names."""
    return MotionGenerator(cast(GeneratorRunner, runner), seed=seed)


class TorchRunner:
    """The teacher behind the run-time's runner interface (``spec``, ``infer_requests``)."""

    def __init__(self, checkpoint: Path, steps: int | None = None,
                 cfg_scale: float | None = None) -> None:
        import torch

        from vivify.engines.runtimes.torch_models.generator import sample_euler
        from vivify.export.train import load

        self.torch, self.sample = torch, sample_euler
        self.model = load(checkpoint)
        cfg = self.model.cfg
        self.spec = GeneratorSpec.from_config(asdict(cfg))
        self.steps = steps or cfg.teacher_steps
        self.cfg_scale = cfg.cfg_scale if cfg_scale is None else cfg_scale
        self.noise_scale = np.ones(cfg.motion_dim, np.float32)  # the teacher: full noise,
        self.noise_memory = 0.0  # ... drawn afresh every window,
        self.calibration = Calibration()  # ... and its own frames shown (identity)

    def infer_requests(self, requests: Sequence[WindowRequest]) -> list[np.ndarray]:
        t = self.torch
        with t.no_grad():
            out = self.sample(self.model, t.from_numpy(np.stack([r.noise for r in requests])),
                              t.from_numpy(np.stack([r.past for r in requests])),
                              t.from_numpy(np.stack([r.mel for r in requests])),
                              t.from_numpy(np.stack([r.controls for r in requests])),
                              self.steps, self.cfg_scale)
        return list(out.numpy())


def run_lockstep(runner: WindowRunner, clips: list[np.ndarray], seed: int
                 ) -> list[np.ndarray]:
    """All clips as parallel sessions; each round batches every ready window into one call."""
    spec = runner.spec
    pad = (spec.window + spec.lookahead + 1) * SAMPLES_PER_FRAME
    sessions = [streaming_session(runner, seed + i) for i in range(len(clips))]
    for s, a in zip(sessions, clips, strict=True):
        s.add_audio(np.concatenate([a, np.zeros(pad, np.float32)]))
    outs: list[list[np.ndarray]] = [[] for _ in clips]
    while True:
        ready = [(i, r) for i, s in enumerate(sessions) if (r := s.ready_request()) is not None]
        if not ready:
            break
        results = runner.infer_requests([r for _, r in ready])
        for (i, _), res in zip(ready, results, strict=True):
            outs[i].append(sessions[i].accept(res))
    return [np.concatenate(o)[: -(-a.size // SAMPLES_PER_FRAME)]
            for o, a in zip(outs, clips, strict=True)]


def run_baseline(clips: list[np.ndarray], seed: int) -> list[np.ndarray]:
    return [BaselineDriver(BaselineConfig(seed=seed + i)).drive(a) for i, a in enumerate(clips)]


def _closed(m: np.ndarray) -> np.ndarray:
    return (m[:, INDEX["lip_press"]] >= CLOSED_PRESS) | (m[:, INDEX["jaw_open"]] <= CLOSED_JAW)


def metrics(preds: list[np.ndarray], labels: list[np.ndarray], classes: list[np.ndarray],
            kinds: list[str], window: int) -> dict:
    jaw = INDEX["jaw_open"]
    speech = [i for i, k in enumerate(kinds) if k == "speech"]
    p_jaw = np.concatenate([preds[i][:, jaw] for i in speech])
    l_jaw = np.concatenate([labels[i][:, jaw] for i in speech])
    recall_hits, recall_n = 0, 0
    lag_score = np.zeros(2 * MAX_LAG + 1)
    for i in speech:
        closed = _closed(preds[i])
        near = closed | np.r_[closed[1:], False] | np.r_[False, closed[:-1]]
        bil = classes[i] == 2
        recall_hits += int(np.sum(near & bil))
        recall_n += int(np.sum(bil))
        p = preds[i][:, jaw] - preds[i][:, jaw].mean()
        q = labels[i][:, jaw] - labels[i][:, jaw].mean()
        for k, lag in enumerate(range(-MAX_LAG, MAX_LAG + 1)):
            # lag > 0: prediction at t + lag matches label at t (prediction late)
            a = p[lag:] if lag >= 0 else p[:lag]
            b = q[: q.size - lag] if lag >= 0 else q[-lag:]
            lag_score[k] += float(np.dot(a, b))
    silent = np.concatenate([preds[i][classes[i] == 1, jaw] for i in range(len(preds))])
    allp = np.concatenate(preds)
    minutes = allp.shape[0] / 25 / 60
    blink = allp[:, INDEX["blink_l"]]
    blinks = int(np.sum((blink[1:] >= 0.5) & (blink[:-1] < 0.5)))
    boundary, inside = [], []
    for p in preds:
        d = np.linalg.norm(np.diff(p, axis=0), axis=1)  # d[t] = change from t to t + 1
        idx = np.arange(d.size) + 1
        boundary.append(d[idx % window == 0])
        inside.append(d[idx % window != 0])
    sung_mean, sung_flap = [], []
    for i, kind in enumerate(kinds):
        if kind == "sung":
            on = np.flatnonzero(classes[i] == 0)
            if on.size > 20:
                seg = preds[i][on[0] + 8: on[-1] - 8, jaw]
                sung_mean.append(float(seg.mean()))
                sung_flap.append(float(np.mean(np.abs(np.diff(seg)))))
    return {
        "jaw_corr": float(np.corrcoef(p_jaw, l_jaw)[0, 1]),
        "bilabial_recall": recall_hits / max(1, recall_n),
        "offset_frames": int(np.argmax(lag_score)) - MAX_LAG,
        "silent_closure": float(np.mean(silent <= SILENT_JAW)),
        "blink_rate_per_min": blinks / minutes,
        "head_spread": {n: float(allp[:, INDEX[n]].std())
                        for n in ("head_yaw", "head_pitch", "head_roll")},
        # W = 1: every step is a window boundary, there is no inside to compare with
        "jitter_ratio": (float(np.concatenate(boundary).mean()
                               / max(1e-9, np.concatenate(inside).mean()))
                         if np.concatenate(inside).size else None),
        "sung_jaw_mean": float(np.mean(sung_mean)) if sung_mean else None,
        "sung_jaw_flap": float(np.mean(sung_flap)) if sung_flap else None,
        "frames": int(allp.shape[0]),
    }


def drift_check(runner: WindowRunner, clips: list[np.ndarray], minutes: float, seed: int
                ) -> dict[str, Any]:
    """Loop the eval audio for ``minutes`` through one streaming session; compare head pose
    statistics of the first and last minute (drift = change of the mean)."""
    audio = np.concatenate(clips)
    reps = int(np.ceil(minutes * 60 * 16000 / audio.size))
    audio = np.tile(audio, reps)[: int(minutes * 60 * 16000)]
    gen = streaming_session(runner, seed)
    out = []
    for k in range(0, audio.size, 16000):
        out.append(gen.push(audio[k:k + 16000]))
    out.append(gen.flush())
    m = np.concatenate(out)
    first, last = m[: 25 * 60], m[-25 * 60:]
    pose: dict[str, dict[str, float]] = {}
    for n in ("head_yaw", "head_pitch", "head_roll", "head_tx", "head_ty", "head_scale"):
        j = INDEX[n]
        pose[n] = {"first_mean": float(first[:, j].mean()),
                   "last_mean": float(last[:, j].mean()),
                   "first_std": float(first[:, j].std()), "last_std": float(last[:, j].std())}
    res: dict[str, Any] = dict(pose)
    res["max_mean_shift"] = max(abs(v["last_mean"] - v["first_mean"]) for v in pose.values())
    res["minutes"] = minutes
    return res


def time_runner(runner: GeneratorRunner, batches: tuple[int, ...] = (1, 16), reps: int = 300
                ) -> dict:
    """Median wall time of one window (ONNX Runtime, the runner's thread count)."""
    spec = runner.spec
    out = {}
    for b in batches:
        rng = np.random.default_rng(b)
        args = (rng.uniform(-1.5, 0.5, (b, spec.context_frames * spec.mels_per_frame,
                                        spec.n_mels)).astype(np.float32),
                np.zeros((b, spec.cache, spec.motion_dim), np.float32),
                np.zeros((b, spec.control_dim), np.float32),
                rng.standard_normal((b, spec.window, spec.motion_dim)).astype(np.float32))
        for _ in range(20):
            runner.infer(*args)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            runner.infer(*args)
            times.append(time.perf_counter() - t0)
        out[f"batch{b}_median_ms"] = 1e3 * float(np.median(times))
        out[f"batch{b}_p90_ms"] = 1e3 * float(np.percentile(times, 90))
    return out


def evaluate(corpus: Path, manifest: Path, teacher: Path | None, out_dir: Path, seed: int,
             drift_minutes: float, opus: bool) -> dict:
    d = np.load(corpus / "eval.npz")
    off, aoff = d["offsets"], d["audio_offsets"]
    n = len(off) - 1
    clips = [d["audio"][aoff[i]:aoff[i + 1]] for i in range(n)]
    labels = [d["labels"][off[i]:off[i + 1]] for i in range(n)]
    classes = [d["classes"][off[i]:off[i + 1]] for i in range(n)]
    kinds = [str(k) for k in d["kinds"]]
    student = GeneratorRunner(manifest, threads=1)
    runners: dict[str, WindowRunner] = {"student": student}
    if teacher is not None and teacher.is_file():
        runners["teacher"] = TorchRunner(teacher)
    conditions = {"clean": clips}
    if opus:
        from vivify.export.data.augment import opus_roundtrip
        conditions["opus24k"] = [opus_roundtrip(a, 24) for a in clips]
    report: dict = {"corpus": str(corpus), "manifest": str(manifest), "seed": seed,
                    "voices": sorted({str(v) for v in d["voices"] if v}), "clips": n,
                    "bars": BARS, "results": {}}
    w = student.spec.window
    for cond, audio in conditions.items():
        res = {}
        for name, runner in runners.items():
            t0 = time.perf_counter()
            preds = run_lockstep(runner, audio, seed)
            res[name] = metrics(preds, labels, classes, kinds, w)
            res[name]["seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res["baseline"] = metrics(run_baseline(audio, seed), labels, classes, kinds, w)
        res["baseline"]["seconds"] = time.perf_counter() - t0
        res["labels"] = metrics(labels, labels, classes, kinds, w)
        report["results"][cond] = res
        print(json.dumps({cond: {k: {m: v[m] for m in ("jaw_corr", "bilabial_recall",
                                                       "offset_frames", "silent_closure")}
                                 for k, v in res.items()}}), flush=True)
    cfg = student.manifest["config"]
    report["compute_per_window"] = {
        "teacher_network_evals": cfg["teacher_steps"] * (2 if cfg["cfg_scale"] != 1 else 1),
        "student_network_evals": cfg["student_steps"]}
    report["compute_ratio"] = (report["compute_per_window"]["teacher_network_evals"]
                               / report["compute_per_window"]["student_network_evals"])
    if drift_minutes > 0:
        report["drift"] = drift_check(student, [c for c, k in zip(clips, kinds, strict=True)
                                                if k == "speech"], drift_minutes, seed)
    report["timing_ort_1thread"] = time_runner(student)
    report["latency_ms"] = (cfg["window"] + cfg["lookahead"]) * 40
    report["onnx_bytes"] = student.manifest["bytes"]
    report["bars_met"] = bars_met(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "generator_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "generator_eval.md").write_text(markdown(report))
    return report


def bars_met(report: dict) -> dict:
    r = report["results"]["clean"]
    s, b = r["student"], r["baseline"]
    met = {
        "jaw_corr>=0.75": s["jaw_corr"] >= BARS["jaw_corr"],
        "bilabial_recall>=0.85": s["bilabial_recall"] >= BARS["bilabial_recall"],
        "|offset|<=1": abs(s["offset_frames"]) <= BARS["offset_frames"],
        "silent_closure>=0.95": s["silent_closure"] >= BARS["silent_closure"],
        "beats_baseline": (s["jaw_corr"] > b["jaw_corr"]
                           and s["bilabial_recall"] > b["bilabial_recall"]
                           and s["silent_closure"] >= b["silent_closure"]
                           and abs(s["offset_frames"]) <= abs(b["offset_frames"])),
        "jitter_ratio<=1.2": (s["jitter_ratio"] is None
                              or s["jitter_ratio"] <= BARS["jitter_ratio"]),
        "latency<=160ms": report["latency_ms"] <= 160,
        "batch1<=3ms": report["timing_ort_1thread"]["batch1_median_ms"] <= 3.0,
        "batch16<=15ms": report["timing_ort_1thread"]["batch16_median_ms"] <= 15.0,
        "onnx<=20MB": report["onnx_bytes"] <= 20 * 2**20,
        "compute_ratio>=10": report["compute_ratio"] >= BARS["compute_ratio"],
    }
    if "teacher" in r:
        t = r["teacher"]
        met["student_within_5pct_of_teacher"] = all(
            s[k] >= (1 - BARS["teacher_gap"]) * t[k]
            for k in ("jaw_corr", "bilabial_recall", "silent_closure"))
    return met


def markdown(report: dict) -> str:
    lines = ["# Learned motion generator — evaluation", "",
             f"Held-out voices ({', '.join(report['voices'])}), held-out sentences, "
             f"{report['clips']} clips (speech, silence with noise/breaths, sung vowels). "
             "Made by `make eval` (`python -m vivify.export.evaluate`).", ""]
    cols = ("jaw_corr", "bilabial_recall", "offset_frames", "silent_closure",
            "blink_rate_per_min", "jitter_ratio", "sung_jaw_mean", "sung_jaw_flap")
    for cond, res in report["results"].items():
        header = "| driver | " + " | ".join(cols) + " | head yaw/pitch/roll std |"
        lines += [f"## {cond}", "", header, "|---" * (len(cols) + 2) + "|"]
        for name, m in res.items():
            vals = [f"{m[c]:.3f}" if isinstance(m[c], float) else str(m[c]) for c in cols]
            hs = m["head_spread"]
            lines.append(f"| {name} | " + " | ".join(vals) + " | "
                         f"{hs['head_yaw']:.3f}/{hs['head_pitch']:.3f}/{hs['head_roll']:.3f} |")
        lines.append("")
    lines += ["## Bars", ""]
    lines += [f"- {k}: {'met' if v else '**missed**'}" for k, v in report["bars_met"].items()]
    t = report["timing_ort_1thread"]
    lines += ["", f"ONNX Runtime, one thread: batch 1 median {t['batch1_median_ms']:.3f} ms, "
              f"batch 16 median {t['batch16_median_ms']:.3f} ms. Algorithmic latency "
              f"{report['latency_ms']} ms. ONNX size {report['onnx_bytes'] / 1e6:.2f} MB. "
              f"Network evaluations per window: teacher "
              f"{report['compute_per_window']['teacher_network_evals']}, student "
              f"{report['compute_per_window']['student_network_evals']}."]
    if "drift" in report:
        lines += ["", f"Drift over {report['drift']['minutes']} min of looped speech: largest "
                  f"change of a head-pose mean between the first and last minute "
                  f"{report['drift']['max_mean_shift']:.4f} (motion units)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", type=Path, default=Path("artifacts/generator/corpus"))
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    p.add_argument("--teacher", type=Path, default=Path("artifacts/generator/teacher.pt"))
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drift-minutes", type=float, default=10.0)
    p.add_argument("--no-opus", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the teacher")
    args = p.parse_args()
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:  # the student and the baseline need no torch
        pass
    report = evaluate(args.corpus, args.manifest, args.teacher, args.out, args.seed,
                      args.drift_minutes, not args.no_opus)
    print(json.dumps(report["bars_met"], indent=2))


if __name__ == "__main__":
    main()
