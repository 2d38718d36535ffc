"""``python -m export.data.build``: make the corpus (``make data``), reproducible from a seed.

Clip kinds: speech (1–2 espeak sentences with pauses, room noise and breaths sometimes),
silence (digital, room noise up to −40 dBFS, breaths), and sung vowels (source-filter
synthesis). Each clip is one job with its own seed ``[seed, clip_index]``, so the corpus is the
same whatever the number of worker processes. Training voices and sentence ids are disjoint
from the evaluation ones (held-out voices speak held-out sentences).

Output (``--out``, default ``artifacts/generator/corpus``): ``train.npz`` and ``eval.npz`` with
concatenated per-frame arrays (``features`` (N, 4, 40), ``labels`` (N, 19), ``classes`` (N,))
and per-clip ``offsets``, ``controls``, ``kinds``; ``eval.npz`` also holds the 16 kHz audio.
"""

from __future__ import annotations

import argparse
import json
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from engines.audio_io import SAMPLES_PER_FRAME
from engines.motion_generator import log_mel_frames
from export.data import augment as aug
from export.data import labels as lab
from export.data.text import EVAL_SENTENCE_BASE, TRAIN_SENTENCE_BASE, sentence

RATE = 16_000
TRAIN_VOICES = ("en-us", "en-us+m3", "en-us+f2", "en-us+f4", "en-gb-x-rp", "en-gb-x-rp+f1",
                "en-029", "en-gb-x-gbclan+m5", "en-us+klatt", "en+m1", "en-us+f5", "en+Andy",
                "de", "de+f3", "fr+m2", "es", "es+f1", "it+m4", "pt", "nl+m1", "pl+f2")
EVAL_VOICES = ("en-gb-scotland+f3", "en-us+m7", "en-gb-x-gbcwmd+f1", "es+m6", "de+klatt3")
SUNG_VOWELS = tuple(aug.FORMANTS)
DEFAULT_COUNTS = {"train": {"speech": 1200, "silence": 80, "sung": 80},
                  "eval": {"speech": 80, "silence": 10, "sung": 10}}
LEAD_S = (0.2, 1.0)
PAUSE_S = (0.25, 0.8)
ROOM_NOISE_DBFS = (-70.0, -40.0)

_ESPEAK = None


def _espeak():  # one synthesiser per worker process
    global _ESPEAK
    if _ESPEAK is None:
        from export.data.synth import Espeak
        _ESPEAK = Espeak()
    return _ESPEAK


def _language(voice: str) -> str:
    base = voice.split("+")[0]
    return "en" if base.startswith("en") else base.split("-")[0]


def _speech(voice: str, sentence_ids: list[int], rng: np.random.Generator, clean: bool
            ) -> tuple[np.ndarray, list[tuple[float, float, str]], list[str]]:
    """One or two sentences separated by a pause, with leading and trailing silence."""
    es = _espeak()
    parts: list[np.ndarray] = []
    segs: list[tuple[float, float, str]] = []
    t = rng.uniform(*LEAD_S)
    parts.append(np.zeros(int(t * RATE), np.float32))
    rate_wpm = int(rng.integers(130, 200))
    pitch, prange = int(rng.integers(30, 71)), int(rng.integers(30, 81))
    for k, sid in enumerate(sentence_ids):
        if k:
            gap = rng.uniform(*PAUSE_S)
            parts.append(np.zeros(int(gap * RATE), np.float32))
            t += int(gap * RATE) / RATE
        utt = es.say(sentence(_language(voice), sid), voice, rate_wpm, pitch, prange)
        audio = aug.resample(utt.audio, utt.rate, RATE)
        scale = 1.0
        if not clean and rng.uniform() < 0.3:  # speed: resample, and move the labels with it
            down = round(100 * rng.uniform(*aug.SPEED))
            audio = aug.resample(audio, down, 100)
            scale = 100 / down
        parts.append(audio)
        segs += lab.segments([(t + s * scale, t + e * scale, p) for s, e, p in utt.phonemes])
        t += audio.size / RATE
    parts.append(np.zeros(int(rng.uniform(*LEAD_S) * RATE), np.float32))
    x = np.concatenate(parts)
    applied: list[str] = []
    if not clean:
        if rng.uniform() < 0.3:
            x = x + aug.room_noise(x.size, float(rng.uniform(*ROOM_NOISE_DBFS)), rng)
            applied.append("room")
        x, more = aug.augment(x, rng)
        applied += more
        x = aug.apply_gain(x, rng)
    return x, segs, applied


def _silence(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    n = int(rng.uniform(3.0, 8.0) * RATE)
    x = np.zeros(n, np.float32)
    if rng.uniform() < 0.7:
        x += aug.room_noise(n, float(rng.uniform(*ROOM_NOISE_DBFS)), rng)
    for _ in range(int(rng.integers(0, 3))):
        m = int(rng.uniform(0.3, 0.6) * RATE)
        s = int(rng.integers(0, n - m))
        x[s:s + m] += aug.breath(m, rng)
    return x, []


def _sung(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    lead, dur = rng.uniform(*LEAD_S), rng.uniform(1.5, 4.0)
    vowel = str(rng.choice(SUNG_VOWELS))
    y = aug.sung_vowel(vowel, dur, rng)
    x = np.concatenate([np.zeros(int(lead * RATE), np.float32), y,
                        np.zeros(int(rng.uniform(*LEAD_S) * RATE), np.float32)])
    return x, [(lead, lead + y.size / RATE, vowel)]


def make_clip(job: tuple[str, str, int, int]) -> dict:
    """One clip: (split, kind, index, seed) → features, labels, classes, controls."""
    split, kind, index, seed = job
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, index])
    clean = split == "eval"
    voices = TRAIN_VOICES if split == "train" else EVAL_VOICES
    base = TRAIN_SENTENCE_BASE if split == "train" else EVAL_SENTENCE_BASE
    voice, applied = "", []
    if kind == "speech":
        voice = voices[index % len(voices)]
        n_sent = 1 if rng.uniform() < 0.6 else 2
        ids = [base + int(rng.integers(0, 100_000)) for _ in range(n_sent)]
        x, segs, applied = _speech(voice, ids, rng, clean)
    elif kind == "silence":
        x, segs = _silence(rng)
    else:
        x, segs = _sung(rng)
        if not clean:
            x = aug.apply_gain(x, rng)
    n_frames = -(-x.size // SAMPLES_PER_FRAME)
    controls = lab.random_controls(rng) if split == "train" else np.zeros(lab.CONTROL_DIM,
                                                                          np.float32)
    return {
        "features": log_mel_frames(x, n_frames),
        "labels": lab.clip_labels(segs, n_frames, controls, rng),
        "classes": lab.frame_classes(segs, n_frames),
        "controls": controls,
        "audio": x.astype(np.float32) if split == "eval" else None,
        "meta": {"kind": kind, "voice": voice, "augment": applied},
    }


def build(out: Path, seed: int, scale: float, workers: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary = {"seed": seed, "scale": scale}
    t0 = time.perf_counter()
    for split, counts in DEFAULT_COUNTS.items():
        jobs = []
        for kind, n in counts.items():
            n_scaled = max(2, round(n * scale))
            jobs += [(split, kind, len(jobs) + i, seed) for i in range(n_scaled)]
        with get_context("fork").Pool(workers) as pool:
            clips = pool.map(make_clip, jobs, chunksize=4)
        lengths = np.array([len(c["labels"]) for c in clips])
        arrays = {
            "features": np.concatenate([c["features"] for c in clips]).astype(np.float16),
            "labels": np.concatenate([c["labels"] for c in clips]),
            "classes": np.concatenate([c["classes"] for c in clips]),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]),
            "controls": np.stack([c["controls"] for c in clips]),
            "kinds": np.array([c["meta"]["kind"] for c in clips]),
            "voices": np.array([c["meta"]["voice"] for c in clips]),
        }
        if split == "eval":
            audio_lengths = np.array([c["audio"].size for c in clips])
            arrays["audio"] = np.concatenate([c["audio"] for c in clips])
            arrays["audio_offsets"] = np.concatenate([[0], np.cumsum(audio_lengths)])
        np.savez(out / f"{split}.npz", **arrays)
        summary[split] = {"clips": len(clips), "frames": int(lengths.sum()),
                          "hours": float(lengths.sum() / 25 / 3600),
                          "augmented": sum(bool(c["meta"]["augment"]) for c in clips)}
    summary["seconds"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("artifacts/generator/corpus"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the default clip counts")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    print(json.dumps(build(args.out, args.seed, args.scale, args.workers), indent=2))


if __name__ == "__main__":
    main()
