"""Audio augmentations and non-speech sources (all seeded, all at 16 kHz).

Speed changes resample the waveform and scale the phoneme times (the labels move with the
audio); pitch is varied at synthesis time (espeak's pitch parameter) so it never moves the
timing. Opus goes through libopus in PyAV at 16–32 kbit/s, as WebRTC would, with the codec's
delay measured and removed so labels stay aligned.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
from scipy import signal

RATE = 16_000
OPUS_RATE = 48_000  # libopus runs at 48 kHz in WebRTC
OPUS_KBPS = (16, 32)
SNR_DB = (5.0, 30.0)
GAIN_DB = (-12.0, 6.0)
SPEED = (0.9, 1.1)
RT60_S = (0.15, 0.6)
BAND_HZ = (300.0, 3400.0)  # telephone band


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase band-limited resampling."""
    frac = Fraction(rate_out, rate_in)
    return signal.resample_poly(x, frac.numerator, frac.denominator).astype(np.float32)


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White or pink-ish noise at ``snr_db`` below the speech power."""
    noise = rng.standard_normal(x.size).astype(np.float32)
    if rng.uniform() < 0.5:
        noise = signal.lfilter([1.0], [1.0, -0.95], noise).astype(np.float32)
    p_sig = float(np.mean(x.astype(np.float64) ** 2)) + 1e-12
    p_noise = float(np.mean(noise.astype(np.float64) ** 2)) + 1e-12
    return (x + noise * np.sqrt(p_sig / p_noise / 10 ** (snr_db / 10))).astype(np.float32)


def reverb(x: np.ndarray, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """Convolution with an exponentially decaying noise impulse response (direct path kept)."""
    n = int(rt60_s * RATE)
    t = np.arange(n) / RATE
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60_s) * 0.3
    ir[0] = 1.0
    y = signal.fftconvolve(x, ir)[: x.size]
    return (y * np.sqrt(np.mean(x**2) / (np.mean(y**2) + 1e-12))).astype(np.float32)


def band_limit(x: np.ndarray) -> np.ndarray:
    sos = signal.butter(4, BAND_HZ, btype="bandpass", fs=RATE, output="sos")
    return signal.sosfilt(sos, x).astype(np.float32)


def opus_roundtrip(x: np.ndarray, kbps: int) -> np.ndarray:
    """Encode with libopus at ``kbps`` (48 kHz, 20 ms frames) and decode back to 16 kHz."""
    up = resample(x, RATE, OPUS_RATE)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=OPUS_RATE, layout="mono")
        stream.bit_rate = kbps * 1000
        frame = av.AudioFrame.from_ndarray(up[None, :], format="flt", layout="mono")
        frame.sample_rate = OPUS_RATE
        frame.pts = 0
        frame.time_base = Fraction(1, OPUS_RATE)
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    buf.seek(0)
    chunks = []
    with av.open(buf, mode="r") as inp:
        for fr in inp.decode(audio=0):
            chunks.append(fr.to_ndarray().reshape(-1).astype(np.float32))
    y = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    y = resample(y, OPUS_RATE, RATE)
    # align: the decoder may keep part of the encoder delay; find it by cross-correlation
    lag = _best_lag(x, y, 400)
    y = y[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag, np.float32), y])
    out_y = np.zeros_like(x)
    out_y[: min(x.size, y.size)] = y[: x.size]
    return out_y


def _best_lag(x: np.ndarray, y: np.ndarray, max_lag: int) -> int:
    n = min(x.size, y.size, 4 * RATE)
    if n < 2 * max_lag:
        return 0
    c = signal.correlate(y[:n], x[:n], mode="full", method="fft")
    mid = n - 1
    seg = c[mid - max_lag: mid + max_lag + 1]
    return int(np.argmax(seg)) - max_lag


def augment(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """A random chain of augmentations (30 % of clips stay clean). Returns audio and the names."""
    applied: list[str] = []
    if rng.uniform() < 0.3:
        return x, applied
    if rng.uniform() < 0.3:
        x = reverb(x, float(rng.uniform(*RT60_S)), rng)
        applied.append("reverb")
    if rng.uniform() < 0.2:
        x = band_limit(x)
        applied.append("bandlimit")
    if rng.uniform() < 0.4:
        x = add_noise(x, float(rng.uniform(*SNR_DB)), rng)
        applied.append("noise")
    if rng.uniform() < 0.25:
        x = opus_roundtrip(x, int(rng.integers(OPUS_KBPS[0], OPUS_KBPS[1] + 1)))
        applied.append("opus")
    return x, applied


def apply_gain(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    g = 10 ** (rng.uniform(*GAIN_DB) / 20)
    return np.clip(x * g, -1.0, 1.0).astype(np.float32)


def room_noise(n: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Background noise at an RMS level of ``dbfs`` (pinkish)."""
    z = signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(n))
    z = z / (np.sqrt(np.mean(z**2)) + 1e-12)
    return (z * 10 ** (dbfs / 20)).astype(np.float32)


def breath(n: int, rng: np.random.Generator) -> np.ndarray:
    """A breath: band-passed noise (500–2500 Hz) under a slow envelope, around −35 dBFS."""
    sos = signal.butter(2, (500.0, 2500.0), btype="bandpass", fs=RATE, output="sos")
    z = signal.sosfilt(sos, rng.standard_normal(n))
    env = np.sin(np.pi * np.arange(n) / n) ** 2
    z = z * env
    return (z / (np.sqrt(np.mean(z**2)) + 1e-12) * 10 ** (rng.uniform(-40, -30) / 20)
            ).astype(np.float32)


FORMANTS = {"AA": (800, 1200, 2500), "EH": (550, 1800, 2500), "IY": (300, 2300, 3000),
            "OH": (450, 850, 2500), "UW": (320, 800, 2300)}


def sung_vowel(vowel: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A sustained sung vowel: glottal pulse train with vibrato through three formant
    resonators (Klatt-style source-filter synthesis), ~−20 dBFS."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f0 = rng.uniform(110, 330) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * t))
    phase = np.cumsum(f0 / RATE)
    src = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(np.float64)
    src = signal.lfilter([1.0], [1.0, -0.97], src)
    y = src
    for f, bw in zip(FORMANTS[vowel], (80, 100, 150), strict=True):
        r = np.exp(-np.pi * bw / RATE)
        y = signal.lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / RATE), r * r], y)
    env = np.clip(np.minimum(t / 0.08, (seconds - t) / 0.1), 0, 1)
    y = y * env
    y = y / (np.sqrt(np.mean(y**2)) + 1e-12) * 10 ** (rng.uniform(-26, -14) / 20)
    return y.astype(np.float32)
