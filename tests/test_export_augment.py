"""Speaker and channel augmentations (export/data/augment.py): they change the sound, never
the timeline the labels are on."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from vivify.export.data import augment as aug

RATE = aug.RATE


def vowel(f0: float = 120.0, formants: tuple[float, ...] = (700.0, 1200.0, 2600.0),
          seconds: float = 1.0) -> np.ndarray:
    """A buzz through three resonators: a vowel with known pitch and formants."""
    t = np.arange(int(seconds * RATE)) / RATE
    x = signal.sawtooth(2 * np.pi * f0 * t).astype(np.float64)
    for f in formants:
        b, a = signal.iirpeak(f, 8.0, fs=RATE)
        x = signal.lfilter(b, a, x)
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def spectrum_peak(x: np.ndarray, lo: float, hi: float) -> float:
    f, p = signal.welch(x, fs=RATE, nperseg=2048)
    band = (f >= lo) & (f <= hi)
    return float(f[band][np.argmax(p[band])])


def f0(x: np.ndarray) -> float:
    """The period as the first autocorrelation peak within 85 % of the best (no octave error)."""
    seg = x[2000:6000].astype(np.float64)
    c = np.correlate(seg, seg, mode="full")[seg.size - 1:]
    window = c[40:400]
    peaks, _ = signal.find_peaks(window)
    good = [p for p in peaks if window[p] >= 0.85 * window[peaks].max()]
    return RATE / (40 + good[0])


@pytest.mark.parametrize("name", ["vtlp", "pitch", "eq", "phone", "vocoder"])
def test_same_length_level_and_finite(name: str) -> None:
    x = vowel()
    rng = np.random.default_rng(0)
    y = {"vtlp": lambda: aug.vtlp(x, 1.1), "pitch": lambda: aug.pitch_shift(x, 3.0),
         "eq": lambda: aug.equalise(x, rng), "phone": lambda: aug.phone_line(x),
         "vocoder": lambda: aug.vocode(x, rng)}[name]()
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    rms = lambda a: float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))  # noqa: E731
    assert rms(y) == pytest.approx(rms(x), rel=0.05)


def test_vtlp_moves_formants_not_pitch() -> None:
    x = vowel()
    up = aug.vtlp(x, 1.12)
    assert spectrum_peak(up, 1000, 1600) > spectrum_peak(x, 1000, 1600) * 1.07
    assert f0(up) == pytest.approx(f0(x), rel=0.03)


def test_pitch_shift_moves_f0_on_the_same_timeline() -> None:
    x = vowel(f0=120.0)
    y = aug.pitch_shift(x, 4.0)  # a major third up: × 1.26
    assert f0(y) == pytest.approx(120.0 * 2 ** (4 / 12), rel=0.06)
    on = np.zeros(RATE, np.float32)
    on[8000:12000] = x[:4000]  # a burst half-way: it stays where it was
    env = np.abs(aug.pitch_shift(on, 4.0))
    assert env[:7000].max() < 0.2 * env[8500:11500].max()


def periodicity(x: np.ndarray) -> float:
    """The best normalised autocorrelation at a pitch lag (60–400 Hz) of the middle 0.25 s."""
    seg = x[4000:8000].astype(np.float64)
    c = np.correlate(seg, seg, mode="full")[seg.size - 1:]
    return float(c[40:267].max() / c[0])


def test_the_vocoder_keeps_envelope_pitch_and_timeline_and_replaces_the_source() -> None:
    """A parametric voice: the vowel's formants and pitch survive, the waveform is new (a
    pulse train through the LPC envelope), noise stays noise, and nothing moves in time."""
    x = vowel(f0=120.0, formants=(700.0, 1200.0, 2600.0))
    y = aug.vocode(x, np.random.default_rng(0))
    assert spectrum_peak(y, 450, 950) == pytest.approx(700.0, rel=0.08)
    assert spectrum_peak(y, 2200, 3000) == pytest.approx(2600.0, rel=0.08)
    assert f0(y) == pytest.approx(120.0, rel=0.04)
    assert abs(float(np.corrcoef(x[2000:-2000], y[2000:-2000])[0, 1])) < 0.5
    noise = (0.1 * np.random.default_rng(1).standard_normal(RATE)).astype(np.float32)
    assert periodicity(aug.vocode(noise, np.random.default_rng(2))) < 0.3
    assert periodicity(y) > 0.7  # the source was given up to 30 % noise
    on = np.zeros(RATE, np.float32)
    on[8000:12000] = x[:4000]
    env = np.abs(aug.vocode(on, np.random.default_rng(3)))
    assert env[:7400].max() < 0.05 * env[8500:11500].max()
    assert env[12600:].max() < 0.05 * env[8500:11500].max()


def test_phone_line_is_band_limited() -> None:
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(RATE) * 0.1).astype(np.float32)
    y = aug.phone_line(noise)
    f, p = signal.welch(y, fs=RATE, nperseg=1024)
    assert p[f > 4500].mean() < 0.01 * p[(f > 500) & (f < 3000)].mean()


def test_the_chain_is_deterministic_and_names_what_it_did() -> None:
    x = vowel(seconds=2.0)
    a, names_a = aug.augment(x, np.random.default_rng(7))
    b, names_b = aug.augment(x, np.random.default_rng(7))
    assert names_a == names_b and np.array_equal(a, b) and a.shape == x.shape
    seen: set[str] = set()
    for seed in range(40):
        seen |= set(aug.augment(vowel(seconds=0.5), np.random.default_rng(seed))[1])
    assert {"vtlp", "pitch", "eq", "noise"} <= seen
    assert "vocoder" not in seen  # off unless asked for (the shipped recipe's corpus)
    chains = [aug.augment(vowel(seconds=0.5), np.random.default_rng(s), vocoder=1.0)[1]
              for s in range(6)]
    assert any(chains) and all(c[0] == "vocoder" for c in chains if c)  # the voice first


def test_opus_at_8_kbps_keeps_the_timeline() -> None:
    x = vowel(seconds=1.0)
    burst = np.zeros(2 * RATE, np.float32)
    burst[RATE:RATE + x.size // 2] = x[: x.size // 2]
    y = aug.opus_roundtrip(burst, 8)
    env = np.abs(y)
    assert env[: RATE - 800].max() < 0.2 * env[RATE + 800: RATE + 7000].max()
