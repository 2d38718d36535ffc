"""``python -m vivify.export.data.build``: make the corpus (``make data``), reproducible from a
seed.

Clip kinds: speech (1–2 espeak sentences with pauses, room noise and breaths sometimes),
festival (a sentence from a Debian festival voice, segment times from festival itself),
klettres (2–4 human recordings of letters, syllables or words from klettres-data, labelled by
DTW transfer from espeak-ng), silence (digital, room noise up to −40 dBFS, breaths), and sung
vowels (source-filter synthesis). Several synthesisers and real people, so no one spectrum is
what the model learns; the augmentation chain (export/data/augment.py) varies speaker and
channel on top. Held out of training, always: the festival voices in
:data:`FESTIVAL_EVAL_VOICES`, the klettres languages in :data:`KLETTRES_EVAL_LANGUAGES`, the
espeak voices in :data:`EVAL_VOICES` (export/holdout_eval.py scores them), and flite, the
CMU-ARCTIC festival voices and every other recording (the outside check).

Each clip is one job with its own seed ``[seed, clip_index]``, so the corpus is the
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
from typing import TYPE_CHECKING

import numpy as np

from vivify.engines.audio.audio_io import SAMPLES_PER_FRAME
from vivify.engines.motion.generator import log_mel_frames
from vivify.export.data import augment as aug
from vivify.export.data import labels as lab
from vivify.export.data.text import EVAL_SENTENCE_BASE, TRAIN_SENTENCE_BASE, sentence

if TYPE_CHECKING:  # the synthesisers load their C library or binary on first use
    from vivify.export.data.festival import Festival
    from vivify.export.data.klettres import Recording
    from vivify.export.data.synth import Espeak

RATE = 16_000
TRAIN_VOICES = ("en-us", "en-us+m3", "en-us+f2", "en-us+f4", "en-gb-x-rp", "en-gb-x-rp+f1",
                "en-029", "en-gb-x-gbclan+m5", "en-us+klatt", "en+m1", "en-us+f5", "en+Andy",
                "de", "de+f3", "fr+m2", "es", "es+f1", "it+m4", "pt", "nl+m1", "pl+f2")
EVAL_VOICES = ("en-gb-scotland+f3", "en-us+m7", "en-gb-x-gbcwmd+f1", "es+m6", "de+klatt3")
SUNG_VOWELS = tuple(aug.FORMANTS)
FESTIVAL_EVAL_VOICES = ("upc_ca_ona_hts", "czech_dita")  # an HTS voice and a female voice
KLETTRES_EVAL_LANGUAGES = ("fr", "nl")
DEFAULT_COUNTS = {"train": {"speech": 1200, "festival": 500, "klettres": 400, "silence": 80,
                            "sung": 80},
                  "eval": {"speech": 80, "silence": 10, "sung": 10}}
LEAD_S = (0.2, 1.0)
PAUSE_S = (0.25, 0.8)
ROOM_NOISE_DBFS = (-70.0, -40.0)

_ESPEAK: Espeak | None = None
_FESTIVAL: Festival | None = None
_KLETTRES: list[Recording] | None = None


def _espeak() -> Espeak:  # one synthesiser per worker process
    global _ESPEAK
    if _ESPEAK is None:
        from vivify.export.data.synth import Espeak
        _ESPEAK = Espeak()
    return _ESPEAK


def _festival() -> Festival:
    global _FESTIVAL
    if _FESTIVAL is None:
        from vivify.export.data.festival import Festival
        _FESTIVAL = Festival()
    return _FESTIVAL


def festival_train_voices() -> list[str]:
    from vivify.export.data.festival import available_voices

    return [v for v in available_voices() if v not in FESTIVAL_EVAL_VOICES]


def klettres_train_recordings() -> list[Recording]:
    global _KLETTRES
    if _KLETTRES is None:
        from vivify.export.data import klettres

        _KLETTRES = ([r for r in klettres.recordings()
                      if r.language not in KLETTRES_EVAL_LANGUAGES]
                     if klettres.KLETTRES_DIR.is_dir() else [])
    return _KLETTRES


def _with_pauses(parts: list[tuple[np.ndarray, list[tuple[float, float, str]]]],
                 rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Labelled pieces joined with pauses, silence before and after; segments shifted."""
    audio = [np.zeros(int(rng.uniform(*LEAD_S) * RATE), np.float32)]
    segs: list[tuple[float, float, str]] = []
    t = audio[0].size / RATE
    for k, (x, piece) in enumerate(parts):
        if k:
            gap = np.zeros(int(rng.uniform(*PAUSE_S) * RATE), np.float32)
            audio.append(gap)
            t += gap.size / RATE
        segs += [(t + a, t + b, v) for a, b, v in piece if v != "SIL"]
        audio.append(x.astype(np.float32))
        t += x.size / RATE
    audio.append(np.zeros(int(rng.uniform(*LEAD_S) * RATE), np.float32))
    return np.concatenate(audio), segs


def _festival_speech(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float,
                                                                              str]], str]:
    from vivify.export.data.festival import VOICES, sentence

    voice = str(rng.choice(festival_train_voices()))
    text = sentence(VOICES[voice].language, TRAIN_SENTENCE_BASE + int(rng.integers(0, 100_000)))
    clip = _festival().say(text, voice, stretch=float(rng.uniform(0.85, 1.2)))
    x, segs = _with_pauses([(clip.audio, clip.segments)], rng)
    return x, segs, f"festival:{voice}"


def _klettres_speech(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float,
                                                                              str]], str]:
    from vivify.export.data import klettres

    recs = klettres_train_recordings()
    language = str(rng.choice(sorted({r.language for r in recs})))
    same = [r for r in recs if r.language == language]
    picked = [same[int(i)] for i in rng.integers(0, len(same), size=int(rng.integers(2, 5)))]
    parts = []
    for rec in picked:
        clip = klettres.label(rec)
        parts.append((clip.audio, clip.segments))
    x, segs = _with_pauses(parts, rng)
    return x, segs, f"klettres:{language}"


def _channel(x: np.ndarray, rng: np.random.Generator, vocoder: float = 0.0
             ) -> tuple[np.ndarray, list[str]]:
    """Room noise sometimes, then the augmentation chain, then gain (training clips)."""
    applied: list[str] = []
    if rng.uniform() < 0.3:
        x = x + aug.room_noise(x.size, float(rng.uniform(*ROOM_NOISE_DBFS)), rng)
        applied.append("room")
    x, more = aug.augment(x, rng, vocoder)
    return aug.apply_gain(x, rng), applied + more


def _language(voice: str) -> str:
    base = voice.split("+")[0]
    return "en" if base.startswith("en") else base.split("-")[0]


def _speech(voice: str, sentence_ids: list[int], rng: np.random.Generator, clean: bool,
            vocoder: float = 0.0) -> tuple[np.ndarray, list[tuple[float, float, str]], list[str]]:
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
    if clean:
        return x, segs, []
    x, applied = _channel(x, rng, vocoder)
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


def make_clip(job: tuple[str, str, int, int, float]) -> dict:
    """One clip: (split, kind, index, seed, vocoder share) → features, labels, classes,
    controls."""
    split, kind, index, seed, vocoder = job
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, index])
    clean = split == "eval"
    voices = TRAIN_VOICES if split == "train" else EVAL_VOICES
    base = TRAIN_SENTENCE_BASE if split == "train" else EVAL_SENTENCE_BASE
    voice = ""
    applied: list[str] = []
    if kind == "speech":
        voice = voices[index % len(voices)]
        n_sent = 1 if rng.uniform() < 0.6 else 2
        ids = [base + int(rng.integers(0, 100_000)) for _ in range(n_sent)]
        x, segs, applied = _speech(voice, ids, rng, clean, vocoder)
    elif kind in ("festival", "klettres"):
        x, segs, voice = (_festival_speech if kind == "festival" else _klettres_speech)(rng)
        x, applied = _channel(x, rng, vocoder)
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


def _source_available(kind: str) -> bool:
    """festival and klettres are Debian packages (``make data`` installs them); a corpus made
    without one says so in its summary rather than failing."""
    if kind == "festival":
        return bool(festival_train_voices())
    if kind == "klettres":
        return bool(klettres_train_recordings())
    return True


def build(out: Path, seed: int, scale: float, workers: int, vocoder: float = 0.0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"seed": seed, "scale": scale, "vocoder": vocoder}
    t0 = time.perf_counter()
    for split, counts in DEFAULT_COUNTS.items():
        jobs: list[tuple[str, str, int, int, float]] = []
        for kind, n in counts.items():
            if not _source_available(kind):
                summary.setdefault("missing_sources", []).append(kind)
                continue
            n_scaled = max(2, round(n * scale))
            jobs += [(split, kind, len(jobs) + i, seed, vocoder) for i in range(n_scaled)]
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
        # allow_pickle is numpy's default, named so the typed **arrays cannot stand for it
        np.savez(out / f"{split}.npz", allow_pickle=True, **arrays)
        summary[split] = {"clips": len(clips), "frames": int(lengths.sum()),
                          "hours": float(lengths.sum() / 25 / 3600),
                          "augmented": sum(bool(c["meta"]["augment"]) for c in clips),
                          "vocoded": sum("vocoder" in c["meta"]["augment"] for c in clips)}
    summary["seconds"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("artifacts/generator/corpus"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the default clip counts")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--vocoder", type=float, default=0.0, metavar="SHARE",
                   help="share of augmented clips re-spoken by a parametric vocoder "
                        "(augment.vocode; 0 = none, the shipped recipe)")
    args = p.parse_args()
    print(json.dumps(build(args.out, args.seed, args.scale, args.workers, args.vocoder),
                     indent=2))


if __name__ == "__main__":
    main()
