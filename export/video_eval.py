"""Lip-sync scored on the rendered video, the way the outside judge scores it.

The outside judge (``../shared/judge``) measures the mouth on the *frames* a user sees (the
MediaPipe face mesh: inner-lip gap over face height) and times the phones by forced alignment
of a transcript (pocketsphinx, English only). This is the same principle inside the project,
for clips whose phone times are known from their source (festival's own segment times,
klettres recordings labelled by DTW, espeak-ng's events) and in any language:

- the clip is rendered by a driver (``vivify.streamer.offline.render.render_file``: H.264, as
delivered),
  optionally after its audio went through Opus (the WebRTC channel);
- the mouth opening is measured per decoded frame with the project's own face mesh (the same
  MediaPipe landmark model the judge runs);
- the scores follow the judge's definitions: the speech span's 90th percentile opening
  (``open_p90``) and the clip's 5th (rest); a bilabial is *closed* when the opening within its
  segment (± one frame) falls to rest + 25 % of that range, an open vowel (AA EH AH ER: the
  judge's AA AE AH AO AW AY EH ER) *opened* when it reaches rest + 50 %; and from the judge's
  ``lipsync``: *silence at rest*, frames ≥ 0.2 s from any speech whose opening is within 0.02
  of the clip's 10th percentile; *lag*, the frame shift (±6) that best correlates the mouth
  with the audio envelope clipped 40 dB under its peak (+ = video late).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vivify.engines.audio.audio_io import SAMPLES_PER_FRAME

RATE = 16_000
FPS = 25
OPEN_VOWELS = ("AA", "EH", "AH", "ER")
SILENCE_MARGIN_S = 0.2  # the judge's lipsync: silent frames this far from speech ...
SILENCE_SLACK = 0.02  # ... are at rest within this of the 10th-percentile opening
MAX_LAG = 6
ENVELOPE_RANGE_DB = 40.0


@dataclass(frozen=True)
class Scores:
    bilabial_closed: float | None
    vowel_opened: float | None
    open_p90: float
    silence_at_rest: float | None
    lag_frames: int
    bilabials: int
    open_vowels: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def mouth_openings(frames: list[np.ndarray], analyzer: Any) -> np.ndarray:
    """Inner-lip gap (13–14) over face height (10–152) per frame; NaN where no face."""
    out = np.full(len(frames), np.nan)
    for k, rgb in enumerate(frames):
        faces = analyzer.detect(rgb)
        if not faces:
            continue
        lm = analyzer.landmarks(rgb, faces[0])
        face = float(np.linalg.norm(lm[10, :2] - lm[152, :2]))
        out[k] = float(np.linalg.norm(lm[13, :2] - lm[14, :2])) / max(face, 1e-6)
    return out


def envelope_db(audio: np.ndarray, n: int) -> np.ndarray:
    """RMS level in dB per 40 ms frame."""
    out = np.full(n, -100.0)
    for i in range(n):
        block = audio[i * SAMPLES_PER_FRAME:(i + 1) * SAMPLES_PER_FRAME]
        if block.size:
            out[i] = 20 * np.log10(np.sqrt(np.mean(block.astype(np.float64) ** 2)) + 1e-9)
    return out


def score(opening: np.ndarray, segments: list[tuple[float, float, str]],
          audio: np.ndarray) -> Scores:
    """The judge's scores (module docstring) for one clip's per-frame opening."""
    op = np.where(np.isfinite(opening), opening, np.nanmedian(opening))
    n = op.size
    speech = [(a, b) for a, b, v in segments if v != "SIL"]
    lo, hi = min(a for a, _ in speech), max(b for _, b in speech)
    span = op[int(lo * FPS): int(hi * FPS) + 1]
    top, rest = float(np.percentile(span, 90)), float(np.percentile(op, 5))
    closed_thr, open_thr = rest + 0.25 * (top - rest), rest + 0.5 * (top - rest)

    def window(a: float, b: float) -> np.ndarray:
        i, j = int(a * FPS) - 1, int(np.ceil(b * FPS)) + 1
        return op[max(i, 0):min(j, n)]

    bil = [window(a, b).min() <= closed_thr for a, b, v in segments if v == "BMP"]
    vow = [window(a, b).max() >= open_thr for a, b, v in segments if v in OPEN_VOWELS]
    t = (np.arange(n) + 0.5) / FPS
    far = np.ones(n, bool)
    for a, b in speech:
        far &= (t < a - SILENCE_MARGIN_S) | (t > b + SILENCE_MARGIN_S)
    env = envelope_db(audio, n)
    env = np.clip(env, env.max() - ENVELOPE_RANGE_DB, None)
    at_rest = op <= float(np.percentile(op, 10)) + SILENCE_SLACK
    lags = range(-MAX_LAG, MAX_LAG + 1)

    def corr(lag: int) -> float:
        x, y = (env[: n - lag], op[lag:]) if lag >= 0 else (env[-lag:], op[: n + lag])
        return float(np.corrcoef(x, y)[0, 1]) if x.size > 2 and x.std() and y.std() else -1.0

    return Scores(
        bilabial_closed=float(np.mean(bil)) if bil else None,
        vowel_opened=float(np.mean(vow)) if vow else None,
        open_p90=top,
        silence_at_rest=float(np.mean(at_rest[far])) if far.any() else None,
        lag_frames=max(lags, key=corr),
        bilabials=len(bil), open_vowels=len(vow))


def label_motions(segments: list[tuple[float, float, str]], n: int) -> np.ndarray:
    """The mouth targets of ``segments`` on a still head: what a perfect model would show
    (the "labels" row: a source's scores that no model trained on these targets can beat)."""
    from vivify.engines.motion.vector import INDEX, rest_motion
    from vivify.export.data import labels as lab

    mouth = lab.mouth_labels(segments, n)
    motions = np.repeat(rest_motion()[None], n, axis=0)
    for k, name in enumerate(lab.MOUTH):
        motions[:, INDEX[name]] = mouth[:, k]
    return motions


def drive(audio: np.ndarray, model: str) -> np.ndarray:
    """``audio`` (16 kHz) through ``model``: "baseline" or a generator manifest path."""
    from vivify.engines.motion.baseline import BaselineConfig, BaselineDriver
    from vivify.engines.motion.generator import GeneratorRunner, MotionGenerator

    driver: Any = (BaselineDriver(BaselineConfig(seed=0)) if model == "baseline"
                   else MotionGenerator(GeneratorRunner(model), seed=0))
    return np.concatenate([driver.push(audio), driver.flush()])


def render_frames(audio: np.ndarray, motions: np.ndarray, renderer: Any) -> list[np.ndarray]:
    """``motions`` through the renderer with ``audio`` (16 kHz), then H.264 and back: the
    frames a viewer of the file gets."""
    import av

    from vivify.engines.audio.audio_io import SAMPLE_RATE
    from vivify.engines.motion.vector import clip_motion
    from vivify.streamer.offline.video_writer import Mp4Writer

    with tempfile.TemporaryDirectory() as tmp:
        mp4 = Path(tmp) / "out.mp4"
        size = renderer.pack.size
        with Mp4Writer(mp4, width=size, height=size, fps=FPS, audio_rate=SAMPLE_RATE) as out:
            for m in motions:
                out.write_frame(renderer.render(clip_motion(m)).image)
            out.write_audio(audio)
        with av.open(str(mp4)) as box:
            return [f.to_ndarray(format="rgb24") for f in box.decode(video=0)]


def render_and_score(audio: np.ndarray, segments: list[tuple[float, float, str]],
                     model: str, analyzer: Any, renderer: Any,
                     opus_kbps: int | None = None) -> Scores:
    """Render ``audio`` with ``model`` (a driver, or "labels": the targets of ``segments``)
    and score the video. With ``opus_kbps`` the driver hears the audio after an Opus round
    trip (the scores keep the clean timeline)."""
    from vivify.export.data.augment import opus_roundtrip

    if model == "labels":
        motions = label_motions(segments, audio.size // SAMPLES_PER_FRAME)
    else:
        motions = drive(opus_roundtrip(audio, opus_kbps) if opus_kbps else audio, model)
    frames = render_frames(audio, motions, renderer)
    return score(mouth_openings(frames, analyzer), segments, audio)


def pooled_rate(parts: list[tuple[float | None, int]]) -> float | None:
    """A rate over several clips from each clip's (rate, instances): every instance counts
    once; clips without a rate (no instance) are left out. None when there is no instance."""
    n = sum(count for rate, count in parts if rate is not None)
    hits = sum(rate * count for rate, count in parts if rate is not None)
    return round(hits / n, 3) if n else None


def summarise(rows: list[Scores]) -> dict[str, float | None]:
    """Over clips: bilabials and open vowels pooled (each instance counts once, so a clip with
    two bilabials does not weigh as much as one with nine), the other scores as clip means;
    ``bilabials`` / ``open_vowels`` are the pooled counts behind the two rates."""
    def mean(key: str) -> float | None:
        values = [getattr(r, key) for r in rows if getattr(r, key) is not None]
        return round(float(np.mean(values)), 3) if values else None

    def pooled(rate: str, count: str) -> float | None:
        return pooled_rate([(getattr(r, rate), getattr(r, count)) for r in rows])

    lags = [abs(r.lag_frames) for r in rows]
    return {"bilabial_closed": pooled("bilabial_closed", "bilabials"),
            "vowel_opened": pooled("vowel_opened", "open_vowels"),
            "open_p90": mean("open_p90"), "silence_at_rest": mean("silence_at_rest"),
            "lag_frames_median": float(np.median([r.lag_frames for r in rows])),
            "lag_abs_max": float(max(lags)) if lags else 0.0, "clips": float(len(rows)),
            "bilabials": float(sum(r.bilabials for r in rows)),
            "open_vowels": float(sum(r.open_vowels for r in rows))}
