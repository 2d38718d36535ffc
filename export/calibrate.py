"""``python -m vivify.export.calibrate``: undo the student's regression to the mean on the mouth.

A model trained with a squared loss on targets it cannot always predict answers with their
mean: a closure it is unsure of becomes a half-closed mouth, an open vowel a half-open one.
The calibration is a monotone map per mouth dimension, fitted on training clips so that the
distribution of what the model shows, free-running as served, matches the distribution of the
labels (histogram matching: the model's q-quantile goes to the labels' q-quantile). Monotone,
so it never reorders: the model still decides *when* the lips close; the map decides how far
a confident "closing" goes.

The model runs here exactly as :class:`~vivify.engines.motion.generator.MotionGenerator`
serves it (windows from the first frame, its own frames in the cache, the stream's noise
draws), over the corpus's stored features; the knots go into the manifest (``calibration``),
which the run-time applies to the frames it shows (the cache keeps the model's own frames, so
the model's dynamics are the ones fitted). Training clips only: the held-out sources stay out.
It also writes the manifest's ``sampling`` (``--mouth-noise``: the mouth dims' noise factor,
a lower sampling temperature where the audio should decide), which the fit runs with.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from vivify.engines.motion.feature_norm import normalise_clip
from vivify.engines.motion.generator import GeneratorRunner, silence_features, window_request
from vivify.engines.motion.vector import INDEX, clip_motion, rest_motion

CALIBRATED = ("jaw_open", "lip_press", "lip_round", "lip_stretch")
KNOTS = 41


def free_run(runner: GeneratorRunner, features: np.ndarray, controls: np.ndarray,
             seed: int = 0) -> np.ndarray:
    """One clip's frames as served: (n, 4, N_MELS) features → (n, M) clipped raw motion
    (windows made by the run-time's own ``window_request``, the model's frames in the cache,
    before the calibration: what the map is fitted on)."""
    spec = runner.spec
    n = features.shape[0]
    silence = tail = silence_features()
    if spec.norm_prior:  # the stored features, normalised as the stream would be
        features, tail = normalise_clip(spec.norm_prior, features, silence)

    def feature(v: int) -> np.ndarray:
        return features[v] if 0 <= v < n else silence if v < 0 else tail

    cache = np.tile(rest_motion(), (spec.cache, 1))
    out, draw = [], None
    for w, s in enumerate(range(0, n, spec.window)):
        req = window_request(runner, feature, s, w, cache, controls, seed, draw)
        draw = req.draw
        frames = clip_motion(runner.infer_requests([req])[0])
        if spec.cache:
            cache = np.concatenate([cache, frames])[-spec.cache:]
        out.append(frames)
    return np.concatenate(out)[:n]


def fit(pred: np.ndarray, labels: np.ndarray) -> dict[str, list[list[float]]]:
    """Per calibrated dim: [model quantiles, label quantiles] at ``KNOTS`` levels."""
    q = np.linspace(0.0, 1.0, KNOTS)
    knots = {}
    for name in CALIBRATED:
        d = INDEX[name]
        xp = np.quantile(pred[:, d], q)
        xp = xp + np.arange(KNOTS) * 1e-6  # strictly increasing for interpolation
        fp = np.maximum.accumulate(np.quantile(labels[:, d], q))
        knots[name] = [np.round(xp, 6).tolist(), np.round(fp, 6).tolist()]
    return knots


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", type=Path, required=True, help="the student's manifest")
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--clips", type=int, default=400, help="training clips to fit on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exclude", default="", metavar="KINDS",
                   help="comma-separated clip kinds not fitted on (as the model was trained)")
    p.add_argument("--mouth-noise", type=float, default=0.5,
                   help="factor on the mouth dims' sampling noise, stored in the manifest and "
                        "used for the fit (0.5 chosen on the inner voice split and training "
                        "sung clips: docs/generator.md, revision 6)")
    p.add_argument("--press-noise", type=float, default=None,
                   help="the lip press's own noise factor (default: --mouth-noise)")
    p.add_argument("--noise-memory", type=float, default=0.0,
                   help="ρ: the share of a window's mouth noise carried to the next")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    with np.load(args.corpus / "train.npz") as npz:  # each read of a member decompresses it
        d = {k: npz[k] for k in ("features", "labels", "offsets", "controls", "kinds")}
    manifest = json.loads(args.manifest.read_text())
    manifest.pop("calibration", None)
    manifest["sampling"] = {"mouth_noise": args.mouth_noise}
    if args.noise_memory:
        manifest["sampling"]["noise_memory"] = args.noise_memory
    if args.press_noise is not None:
        manifest["sampling"]["press_noise"] = args.press_noise
    args.manifest.write_text(json.dumps(manifest, indent=2) + "\n")  # the run-time's sampling
    runner = GeneratorRunner(args.manifest)
    rng = np.random.default_rng(args.seed)
    left_out = ["silence", *(k for k in args.exclude.split(",") if k)]
    speech = np.flatnonzero(~np.isin(d["kinds"], left_out))
    picked = rng.choice(speech, size=min(args.clips, speech.size), replace=False)
    preds, labels = [], []
    for c in sorted(picked):
        lo, hi = int(d["offsets"][c]), int(d["offsets"][c + 1])
        preds.append(free_run(runner, d["features"][lo:hi], d["controls"][c], seed=int(c)))
        labels.append(d["labels"][lo:hi])
    pred, lab = np.concatenate(preds), np.concatenate(labels)
    manifest["calibration"] = {"method": "quantile map of free-running training output onto "
                                         "the labels (export/calibrate.py)",
                               "clips": len(picked), "frames": int(pred.shape[0]),
                               "knots": fit(pred, lab)}
    args.manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    for name in CALIBRATED:
        d_ = INDEX[name]
        print(f"{name:12s} model p10/p50/p90 {np.percentile(pred[:, d_], [10, 50, 90]).round(3)}"
              f"  labels {np.percentile(lab[:, d_], [10, 50, 90]).round(3)}")
    print(f"calibrated {args.manifest} on {len(picked)} clips in "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
