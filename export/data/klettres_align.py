"""espeak-ng's phones onto the recording (steps 4 and 5 of :mod:`vivify.export.data.klettres`):
the DTW's time map, closures snapped to the recording, contiguous segments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from vivify.export.data import labels as lab
from vivify.export.data.klettres_acoustics import steepest_step
from vivify.export.data.klettres_espeak import MIN_PHONE_S, NASALS, STOPS, bare_phoneme

SNAP_S = 0.08  # a closure run this close to the DTW's guess is the consonant's
BURST_S = 0.015  # a stop's release, after its closure
INITIAL_CLOSURE_S = 0.06  # an utterance-initial stop's silent closure before the onset


def time_map(path: np.ndarray, rec_span: tuple[float, float], esp_span: tuple[float, float],
              duration: float) -> Callable[[float], float]:
    """espeak time → recording time: the DTW path inside the speech, unit slope outside it."""
    r0, r1 = rec_span
    e0, e1 = esp_span
    js, inv = np.unique(path[:, 1], return_inverse=True)
    mean_i = np.bincount(inv, weights=path[:, 0]) / np.bincount(inv)
    x = np.concatenate([[e0], e0 + (js + 0.5) * 0.01, [e1]])
    y = np.concatenate([[r0], r0 + (mean_i + 0.5) * 0.01, [r1]])
    y = np.maximum.accumulate(np.clip(y, r0, r1))

    def f(t: float) -> float:
        if t <= e0:
            return max(0.0, r0 - (e0 - t))
        if t >= e1:
            return min(duration, r1 + (t - e1))
        return float(np.interp(t, x, y))

    return f


def is_vowel(name: str) -> bool:
    return lab.visemes_of(name)[0] in lab.VOWEL_VISEMES


def steepest(mid: np.ndarray, t0: float, t1: float, sign: float) -> float | None:
    """Time of the steepest 20 ms rise (``sign`` 1) or fall (−1) of ``mid`` between t0 and
    t1, if it is at least ``RELEASE_RISE_DB``."""
    return steepest_step(mid, max(0, round(t0 * 100)), min(mid.size - 2, round(t1 * 100)),
                         sign)


def refine_closures(phones: list[list[Any]], runs: list[tuple[float, float]], mid: np.ndarray,
                     onset: float) -> None:
    """Snap every stop and nasal to the recording's own acoustics (in place).

    DTW from espeak-ng cannot place these well: espeak's voiced stops are barely closed (its
    "b" dips 8 dB where a person's voice bar is 40 dB down), its nasal murmurs sound little
    like a person's, and a person's closures last two to four times longer, so the path
    collapses or shifts them. The recording shows them plainly:

    - a stop becomes the closure run (``klettres_acoustics.closed_frames``) overlapping the
      DTW's guess (± ``SNAP_S``) — grown to it, never shrunk — plus ``BURST_S`` of release. An
      utterance-initial stop's closure is silent: it starts ``INITIAL_CLOSURE_S`` before the
      person's onset (lips shut before the burst or the voice bar); a voiceless one with no
      closure to see ends ``2 · BURST_S`` after the onset (aspiration is open-lipped);
    - a nasal after a vowel starts at the steepest fall of the mid band (500–2500 Hz) inside
      that vowel (DTW may be 200 ms off: Dutch "om"), and before a vowel it ends at the
      steepest rise into it (the murmur's edges are the clearest landmarks in speech; its
      inside may not look closed at all: English "me")."""
    first = next((k for k, ph in enumerate(phones) if not ph[2].startswith("_")), None)
    for k, (s, e, name) in enumerate(phones):
        bare = bare_phoneme(name)
        stop = bare.startswith(STOPS)
        nasal = bare.startswith(NASALS)
        if not (stop or nasal):
            continue
        lo = phones[k - 1][0] + MIN_PHONE_S if k > 0 else 0.0
        hi = phones[k + 1][1] - MIN_PHONE_S if k + 1 < len(phones) else e
        if k > 0 and phones[k - 1][2].startswith("_"):
            lo = 0.0 if k == 1 else phones[k - 2][1]  # silence before may shrink to nothing
        if nasal:
            new_s, new_e = s, e
            if k > 0 and is_vowel(phones[k - 1][2]):
                t = steepest(mid, phones[k - 1][0] + 0.03, min(s + SNAP_S, e - MIN_PHONE_S),
                              -1.0)
                new_s = s if t is None else t
            if k + 1 < len(phones) and is_vowel(phones[k + 1][2]):
                t = steepest(mid, max(new_s, s) + 0.02, phones[k + 1][1] - 0.03, 1.0)
                new_e = e if t is None else t
        else:
            near = [(min(re, e + SNAP_S) - max(rs, s - SNAP_S), rs, re) for rs, re in runs
                    if rs <= e + BURST_S]  # a closure comes before its release, not after
            near = [x for x in near if x[0] > 0]  # (Russian "твой": the /v/ looks closed)
            if near:
                _, run_s, release = max(near)
                new_s, new_e = min(s, run_s), max(e, release + BURST_S)
            elif k == first:
                new_s, new_e = s, onset + 2 * BURST_S
            else:
                continue
            if k == first and new_s <= onset + 0.011:
                new_s = onset - INITIAL_CLOSURE_S
        new_s, new_e = max(new_s, lo), min(new_e, hi)
        if new_e - new_s < MIN_PHONE_S:
            continue
        phones[k][0], phones[k][1] = new_s, new_e
        if k > 0:
            phones[k - 1][1] = new_s
        if k + 1 < len(phones):
            phones[k + 1][0] = new_e
        for j in range(k - 1, -1, -1):  # earlier silences the closure swallowed
            if phones[j][1] > new_s:
                phones[j][1] = max(phones[j][0], new_s)
            if phones[j][0] > new_s:
                phones[j][0] = new_s


def finish(segs: list[tuple[float, float, str]], duration: float
            ) -> list[tuple[float, float, str]]:
    """Contiguous segments from 0 to ``duration``: SIL filled in, empty ones dropped, runs of the
    same viseme merged."""
    out: list[list[Any]] = []
    t = 0.0
    for s, e, v in segs:
        s, e = max(s, t), min(e, duration)
        if e <= s + 1e-6:
            continue
        if s > t + 1e-9:
            out.append([t, s, "SIL"])
        if out and out[-1][2] == v:
            out[-1][1] = e
        else:
            out.append([s, e, v])
        t = e
    if t < duration - 1e-9:
        out.append([t, duration, "SIL"])
    merged: list[list[Any]] = []
    for seg in out:
        if merged and merged[-1][2] == seg[2]:
            merged[-1][1] = seg[1]
        else:
            merged.append(seg)
    return [(float(s), float(e), str(v)) for s, e, v in merged]


def speech_phones_span(phones: list[tuple[float, float, str]], fallback: tuple[int, int]
                        ) -> tuple[int, int]:
    """espeak's speech in frames: from its first sounding phone's start to its last one's end.
    Its own phone times say where speech is better than its energy: the 10–25 ms pause
    ("_:") it ends on is above any energy threshold, and a person's vowel decays longer."""
    sounding = [(s, e) for s, e, n in phones if not n.startswith("_")]
    if not sounding:
        return fallback
    lo, hi = round(sounding[0][0] * 100), round(sounding[-1][1] * 100)
    return (lo, hi) if hi - lo >= 2 else fallback

