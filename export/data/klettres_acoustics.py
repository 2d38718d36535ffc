"""The recording side of KLettres labelling: spectra, where the person speaks, DTW, closures.

Everything here reads audio only (16 kHz, 10 ms frames centred on the frame), the person's or
espeak-ng's alike; :mod:`vivify.export.data.klettres` says why the labelling works this way.
"""

from __future__ import annotations

import math

import numpy as np

from vivify.engines.audio.audio_io import SAMPLE_RATE
from vivify.engines.motion.generator import MEL_FMAX_HZ, MEL_FMIN_HZ, mel_filterbank

# --- features (10 ms frames) -----------------------------------------------------------------
HOP = 160  # 10 ms frames
WIN = 512  # 32 ms Hann window centred on the frame (offline labelling: no causality needed)
N_CEPS = 13  # cepstra 1..13 of the log-mel spectrum: the spectral envelope without pitch
LEVEL_WEIGHT = 1.5  # weight of the frame level (dB under the peak / 10) among the features
DELTA_WEIGHT = 0.5  # weight of the cepstral deltas
QUIET_BELOW_PEAK_DB = 35.0  # frames this far under the peak carry no spectral features
# --- where the person speaks (speech_region, noise_floor) --------------------------------------
SPEECH_BELOW_PEAK_DB = 35.0  # speech frames: within this of the loudest frame ...
ABOVE_ROOM_DB = 6.0  # ... and this far above the room's noise, where there is a room,
ABOVE_QUIETEST_DB = 12.0  # ... or above the quietest 100 ms of a file cut tight,
FLOOR_CAP_DB = 25.0  # ... which never asks more than this under the peak
DIGITAL_SILENCE_DB = -90.0  # frames below this are digital zeros, not room noise
FLOOR_WINDOW = 10  # frames (100 ms) for the quietest stretch
ROOM_SPREAD_DB = 6.0
ROOM_MIN_S = 0.4  # this much of a file near its quietest level is a room, not a tight cut
MIN_ZERO_FRAMES = 5  # a file with this many zero frames was gated, padded or faded
CORE_BELOW_PEAK_DB = 12.0  # the word's loud core, to find frames surely away from it
FLOOR_MARGIN_S = 0.3
FLOOR_MIN_FRAMES = 20
MERGE_GAP_S = 0.25  # speech runs this close are one utterance (stop closures are < 0.2 s)
MIN_RUN_S = 0.04  # shorter isolated runs (clicks) are not speech
# --- the DTW ------------------------------------------------------------------------------------
BAND = 0.3  # DTW band half-width, as a fraction of the longer sequence (plus BAND_MIN frames)
BAND_MIN = 8
RELEASE_RISE_DB = 5.0  # a murmur's release (or onset): the mid band moves this much in 20 ms
# --- closures in the recording (klettres_align.refine_closures) -----------------------------
CLOSED_BELOW_DB = 25.0  # a closure: the mid band this far under its speech maximum
FRICATIVE_MARGIN_DB = 25.0  # and the high band not this far above the mid band (/s/)
MIN_CLOSURE_S = 0.02


def resample(x: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import resample_poly

    if rate == SAMPLE_RATE:
        return x.astype(np.float32)
    g = math.gcd(SAMPLE_RATE, rate)
    return resample_poly(x, SAMPLE_RATE // g, rate // g).astype(np.float32)


_FB = mel_filterbank()  # (257, 40), the model's mel bands
_BIN_HZ = SAMPLE_RATE / WIN
_BAND_LO, _BAND_HI = math.ceil(MEL_FMIN_HZ / _BIN_HZ), int(MEL_FMAX_HZ / _BIN_HZ) + 1
_MEL_HZ = np.argmax(_FB, axis=0) * _BIN_HZ  # each mel band's centre (Hz)
_HANN = np.hanning(WIN + 1)[:-1].astype(np.float32)
_DCT = np.cos(np.pi / _FB.shape[1] * (np.arange(_FB.shape[1])[None, :] + 0.5)
              * np.arange(1, N_CEPS + 1)[:, None]).astype(np.float32)  # (13, 40) DCT-II rows


def spectra(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log-mel dB (n, 40), level dB (n,)) of centred 10 ms frames: frame k is centred at
    (k + 0.5) · 10 ms, so frame edges are times. Level is in the mel range (60–7600 Hz), so hum
    and DC do not count as speech."""
    x = np.asarray(audio, dtype=np.float32)
    n = max(1, x.size // HOP)
    pad = np.pad(x, (WIN // 2 - HOP // 2, WIN))
    idx = np.arange(n)[:, None] * HOP + np.arange(WIN)[None, :]
    power = np.abs(np.fft.rfft(pad[idx] * _HANN, axis=1)) ** 2 / WIN
    logmel = 10.0 * np.log10(power @ _FB + 1e-12)
    level = 10.0 * np.log10(power[:, _BAND_LO:_BAND_HI].sum(axis=1) + 1e-12)
    return logmel.astype(np.float32), level.astype(np.float32)


def noise_floor(level: np.ndarray) -> float | None:
    """The level over which a frame may be speech, or None when there is no room noise to
    rise above. Digital zeros (files gated, padded or faded) are never the room. In order:

    - a room: ``ROOM_MIN_S`` of the file lies within ``ROOM_SPREAD_DB`` of its quietest
      100 ms (median; Brazilian "lu": noise 20 dB under the vowel for 1.4 s of 1.9); speech is
      ``ABOVE_ROOM_DB`` over that spread;
    - a file gated near the word: the frames more than ``FLOOR_MARGIN_S`` from its loud core
      (``CORE_BELOW_PEAK_DB``), if there are ``FLOOR_MIN_FRAMES``, are the room (median plus
      ``ABOVE_ROOM_DB``); a file gated right at the word has none (Low German "huus": its
      /s/ trails 0.3 s after the vowel, hence a margin that long) and gets None;
    - a file cut tight around the word: its quietest part may be speech (a Czech voice bar,
      15–25 dB under the vowel), so ``ABOVE_QUIETEST_DB`` over it, at most peak −
      ``FLOOR_CAP_DB``."""
    live = level > DIGITAL_SILENCE_DB
    peak = float(level.max())
    k = min(FLOOR_WINDOW, level.size)
    windows = np.lib.stride_tricks.sliding_window_view(level, k)
    whole = np.lib.stride_tricks.sliding_window_view(live, k).all(axis=1)
    # the median of 100 ms, so one fade-in frame does not make a stretch the quietest
    quietest = float(np.median(windows[whole], axis=1).min()) if whole.any() else None
    if quietest is not None and (
            np.sum(live & (level < quietest + ROOM_SPREAD_DB)) * 0.01 >= ROOM_MIN_S):
        return quietest + ROOM_SPREAD_DB / 2 + ABOVE_ROOM_DB
    if (~live).sum() >= MIN_ZERO_FRAMES:
        core = np.flatnonzero(level > peak - CORE_BELOW_PEAK_DB)
        margin = round(FLOOR_MARGIN_S * 100)
        idx = np.arange(level.size)
        room = level[((idx < core[0] - margin) | (idx > core[-1] + margin)) & live]
        return float(np.median(room)) + ABOVE_ROOM_DB if room.size >= FLOOR_MIN_FRAMES else None
    if quietest is None:
        return None
    return min(quietest + ABOVE_QUIETEST_DB, peak - FLOOR_CAP_DB)


def speech_region(level: np.ndarray, floor_db: float | None = None) -> tuple[int, int]:
    """[start, end) frames of the utterance: the loudest run of speech frames plus runs within
    ``MERGE_GAP_S`` of it (a stop's closure, a final release), clicks and far breaths left out.

    Speech frames are within ``SPEECH_BELOW_PEAK_DB`` of the peak and, in a noisy recording,
    above ``floor_db`` (:func:`noise_floor`; None: clean or gated audio)."""
    peak = float(level.max())
    thr = peak - SPEECH_BELOW_PEAK_DB
    if floor_db is not None:
        thr = max(thr, floor_db)
    on = np.flatnonzero(level > thr)
    if on.size == 0:
        return 0, level.size
    gap, min_run = round(MERGE_GAP_S * 100), round(MIN_RUN_S * 100)
    runs: list[list[int]] = [[int(on[0]), int(on[0]) + 1]]
    for i in on[1:]:
        if i == runs[-1][1]:
            runs[-1][1] = int(i) + 1
        else:
            runs.append([int(i), int(i) + 1])
    power = np.power(10.0, level / 10.0)
    main = max(range(len(runs)), key=lambda k: float(power[runs[k][0]:runs[k][1]].sum()))
    start, end = runs[main]
    for s, e in runs[main + 1:]:  # extend right
        if s - end > gap:
            break
        if e - s >= min_run or s - end <= 3:
            end = e
    for s, e in reversed(runs[:main]):  # and left
        if start - e > gap:
            break
        if e - s >= min_run or start - e <= 3:
            start = s
    return start, end


def features(logmel: np.ndarray, level: np.ndarray) -> np.ndarray:
    """What DTW compares, per 10 ms frame: cepstra 1–13 of the log-mel spectrum normalised
    over the utterance's sounding frames (removes channel and much of the speaker), their
    deltas, and the level under the utterance's peak (dB / 10, floored at −40 dB).

    The level is not z-scored: espeak's closures are digital silence, and z-scoring squeezes
    everything else of its level to one value. Cepstra of frames 35 dB under the peak are set
    to the mean: the spectrum of a silence is the room's, not the speaker's, on both sides."""
    rel = level - float(level.max())
    loud = rel > -QUIET_BELOW_PEAK_DB
    ceps = logmel @ _DCT.T
    ref = ceps[loud] if loud.sum() >= 3 else ceps
    ceps = (ceps - ref.mean(0)) / (ref.std(0) + 1e-3)
    ceps[~loud] = 0.0
    padded = np.pad(ceps, ((2, 2), (0, 0)), mode="edge")
    delta = (2 * (padded[4:] - padded[:-4]) + (padded[3:-1] - padded[1:-3])) / 10.0
    delta = DELTA_WEIGHT * delta / (delta[loud].std(0) + 1e-3 if loud.sum() >= 3 else 1.0)
    lev = LEVEL_WEIGHT * np.clip(rel, -40.0, 0.0) / 10.0
    return np.hstack([ceps, delta, lev[:, None]]).astype(np.float32)


def dtw(cost: np.ndarray, band: int | None = None) -> np.ndarray:
    """Monotonic DTW path (K, 2) from (0, 0) to (n-1, m-1), symmetric steps (diagonal weight 2,
    so the total does not favour diagonal shortcuts), inside a band around the straight line
    from corner to corner. Rows are filled one at a time with the horizontal run resolved by a
    cumulative minimum, so it is numpy-fast."""
    n, m = cost.shape
    if band is None:
        band = max(BAND_MIN, math.ceil(BAND * max(n, m)))
    centre = np.arange(n) * ((m - 1) / max(n - 1, 1))
    cols = np.arange(m)
    inside = np.abs(cols[None, :] - centre[:, None]) <= band
    big = np.float64(1e18)
    c = np.where(inside, cost.astype(np.float64), big)
    acc = np.full((n, m), big)
    move = np.zeros((n, m), dtype=np.int8)  # 0 diagonal, 1 from above, 2 from the left
    acc[0, 0] = c[0, 0]
    for j in range(1, m):
        acc[0, j] = acc[0, j - 1] + c[0, j]
        move[0, j] = 2
    for i in range(1, n):
        diag = np.full(m, big)
        diag[1:] = acc[i - 1, :-1] + 2 * c[i, 1:]
        up = acc[i - 1] + c[i]
        best = np.minimum(diag, up)
        step = np.where(diag <= up, 0, 1).astype(np.int8)
        # horizontal moves: acc[i, j] = min(best[j], acc[i, j-1] + c[i, j]); sequential in j
        row, rstep = best.copy(), step
        ci = c[i]
        for j in range(1, m):
            left = row[j - 1] + ci[j]
            if left < row[j]:
                row[j], rstep[j] = left, 2
        acc[i], move[i] = row, rstep
    i, j = n - 1, m - 1
    out = [(i, j)]
    while i > 0 or j > 0:
        mv = move[i, j]
        if mv == 0:
            i, j = i - 1, j - 1
        elif mv == 1:
            i -= 1
        else:
            j -= 1
        out.append((i, j))
    return np.asarray(out[::-1], dtype=np.int64)


def band_db(logmel: np.ndarray, lo_hz: float, hi_hz: float) -> np.ndarray:
    power = np.power(10.0, logmel[:, (lo_hz <= _MEL_HZ) & (hi_hz > _MEL_HZ)] / 10.0)
    return 10.0 * np.log10(power.mean(axis=1) + 1e-12)



def steepest_step(band_db: np.ndarray, lo: int, hi: int, sign: float) -> float | None:
    """Time (s) of the steepest 20 ms rise (``sign`` 1) or fall (−1) of a band level between
    frames ``lo`` and ``hi`` (between the two frames of the step), if it moves at least
    ``RELEASE_RISE_DB``: a nasal murmur's release or onset."""
    if hi <= lo:
        return None
    step = sign * (band_db[lo + 2:hi + 2] - band_db[lo:hi])
    j = int(np.argmax(step))
    return (lo + j + 1.5) * 0.01 if step[j] >= RELEASE_RISE_DB else None


def closed_frames(logmel: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    """Frames where a stop has the mouth shut, from band levels relative to their maxima in
    the utterance (``span``): the mid band (500–2500 Hz) ``CLOSED_BELOW_DB`` under its maximum,
    and the high band (> 2500 Hz) not standing out above it by ``FRICATIVE_MARGIN_DB`` (that
    would be /s/ or /ʃ/). That is a stop's silence and a voiced stop's voice bar (only < 500 Hz
    passes closed lips: Czech and Italian "ba" have 100–160 ms of it, 35–60 dB down in the
    mid band); an /u/ (F2 ~ 800 Hz) stays within ~24 dB."""
    s0, s1 = span
    mid = band_db(logmel, 500.0, 2500.0)
    high = band_db(logmel, 2500.0, 1e9)
    mid, high = mid - float(mid[s0:s1].max()), high - float(high[s0:s1].max())
    return (mid < -CLOSED_BELOW_DB) & (high < mid + FRICATIVE_MARGIN_DB)


def closure_runs(mask: np.ndarray, lo: int, hi: int) -> list[tuple[float, float]]:
    """(start_s, end_s) of runs of True frames inside [lo, hi), at least MIN_CLOSURE_S long."""
    runs, k = [], lo
    while k < hi:
        if mask[k]:
            j = k
            while j < hi and mask[j]:
                j += 1
            if (j - k) * 0.01 >= MIN_CLOSURE_S - 1e-9:
                runs.append((k * 0.01, j * 0.01))
            k = j
        else:
            k += 1
    return runs

