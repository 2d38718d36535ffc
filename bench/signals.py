"""Test speech for the loopback benchmark: espeak-ng phrases (synthetic vowels without it),
levelled bursts cycling with silence, and the energy detector that finds their onsets.

The detector is the measuring stick of the onset latency: it finds onsets in the *sent*
signal (5 ms windows above −45 dBFS after ≥ 0.4 s below) and, the same way, in the audio
the server sends back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

WS_RATE = 16_000  # Hz: PCM s16le mono over the WebSocket (and espeak's output here)
LEAD_S = 2.0  # silence before the first onset: session start and idle calibration
SPEECH_S = 1.0
SILENCE_S = 1.5
ONSET_DB = -45.0  # dBFS: energy-detector level
ONSET_WIN_S = 0.005
ONSET_GAP_S = 0.4  # silence needed before an onset counts
VOICE, SPEED = "en-us", 160  # espeak-ng voice and words per minute of every phrase
PHRASES = ("hello there", "my name is Peter", "bottle of milk", "one two three",
           "good morning", "how are you", "see you later", "thank you")
SENTENCE = ("Hello there. My name is Peter, and I bought a bottle of milk at the shop on the "
            "corner, because we had run out of it this morning.")


def resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Linear-interpolation resampling (enough for test speech)."""
    if src == dst:
        return x.astype(np.float32)
    n = round(x.size * dst / src)
    return np.interp(np.arange(n) * (src / dst), np.arange(x.size), x).astype(np.float32)


def espeak(text: str, rate: int) -> np.ndarray | None:
    """``text`` spoken by espeak-ng as float32 mono at ``rate``; None without espeak-ng."""
    from vivify.engines.audio import espeak as voice

    if not voice.available():
        return None
    return resample(voice.speak(text, VOICE, SPEED), WS_RATE, rate)


def synthetic_vowels(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Voice-like stand-in for speech: 120 Hz harmonics, formant-weighted, 4 Hz syllables."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    f1, f2 = rng.uniform(500, 800), rng.uniform(1000, 2000)
    x = np.zeros_like(t)
    for h in range(1, 30):
        f = 120.0 * h
        if f > rate / 2 - 200:
            break
        gain = math.exp(-((f - f1) / 300) ** 2) + 0.5 * math.exp(-((f - f2) / 400) ** 2) + 0.05
        x += gain * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t - np.pi / 2)
    return (x * envelope).astype(np.float32)


def level(x: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale to RMS ``dbfs`` (0 dBFS = RMS 1.0), peaks limited to 0.95."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) or 1.0
    y = x * (10 ** (dbfs / 20) / rms)
    peak = float(np.abs(y).max())
    return (y * (0.95 / peak) if peak > 0.95 else y).astype(np.float32)


def speech_clips(rate: int, seconds: float = SPEECH_S, dbfs: float = -18.0) -> list[np.ndarray]:
    """Bursts of exactly ``seconds``, each starting at its first voiced sample, levelled."""
    clips: list[np.ndarray] = []
    n = round(seconds * rate)
    fade = np.linspace(1.0, 0.0, round(0.01 * rate), dtype=np.float32)
    for i, phrase in enumerate(PHRASES):
        x = espeak(phrase, rate)
        if x is None:
            x = synthetic_vowels(seconds, rate, seed=i)
        onsets = detect_onsets(x, rate, gap_s=0.0)
        x = x[onsets[0]:] if onsets else x
        x = np.concatenate([x, np.zeros(max(0, n - x.size), np.float32)])[:n]
        x[-fade.size:] *= fade
        clips.append(level(x, dbfs))
    return clips


def sentence_pcm(seconds_without_espeak: float = 6.0) -> np.ndarray:
    """:data:`SENTENCE` as levelled s16le PCM at :data:`WS_RATE`, for the session WebSocket."""
    sentence = espeak(SENTENCE, WS_RATE)
    if sentence is None:
        sentence = synthetic_vowels(seconds_without_espeak, WS_RATE)
    return np.clip(np.rint(level(sentence, -18.0) * 32767), -32768, 32767).astype("<i2")


def cycle_signal(seconds: float, rate: int, clips: Sequence[np.ndarray], lead_s: float = LEAD_S,
                 silence_s: float = SILENCE_S) -> tuple[np.ndarray, list[int]]:
    """``lead_s`` of silence, then burst/silence cycles for ``seconds``; returns the signal and
    where each burst was placed (sample indices)."""
    total = round(seconds * rate)
    out = np.zeros(total, np.float32)
    starts: list[int] = []
    pos = round(lead_s * rate)
    k = 0
    while pos + clips[k % len(clips)].size <= total:
        clip = clips[k % len(clips)]
        out[pos:pos + clip.size] = clip
        starts.append(pos)
        pos += clip.size + round(silence_s * rate)
        k += 1
    return out, starts


def detect_onsets(x: np.ndarray, rate: int, threshold_db: float = ONSET_DB,
                  gap_s: float = ONSET_GAP_S, win_s: float = ONSET_WIN_S) -> list[int]:
    """Sample indices where the signal's energy rises above ``threshold_db`` after at least
    ``gap_s`` below it (the start of the signal counts as below). Resolution: ``win_s``."""
    win = max(1, round(win_s * rate))
    n = x.size // win
    if n == 0:
        return []
    frames = np.asarray(x[:n * win], np.float64).reshape(n, win)
    energy = 10 * np.log10(np.mean(frames * frames, axis=1) + 1e-20)
    loud = energy > threshold_db
    need = round(gap_s / win_s)
    onsets: list[int] = []
    quiet_run = need  # the signal starts "after silence"
    for i, is_loud in enumerate(loud):
        if is_loud:
            if quiet_run >= need:
                onsets.append(i * win)
            quiet_run = 0
        else:
            quiet_run += 1
    return onsets
