"""Test media generators: speech, tones, noise and encoded files, made on the fly.

Tests make their media instead of committing binaries, so every fixture documents how it was
produced and its level is known exactly (levels matter: the baseline driver maps absolute dBFS
to mouth opening). Speech comes from espeak-ng through :mod:`vivify.engines.audio.espeak`, the
one place it is called (Debian package ``espeak-ng``); tests that need it check
:func:`have_espeak` and skip when it is absent.
"""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np

from vivify.engines.audio import espeak
from vivify.engines.audio.audio_encode import encode_clip

__all__ = ["DEFAULT_RATE", "PCM16_MAX", "dbfs_to_rms", "encode_audio", "espeak_wav",
           "have_espeak", "noise", "noise_wav", "rms_dbfs", "sine", "sine_wav", "speech",
           "write_wav"]

DEFAULT_RATE = 16_000  # Hz
PCM16_MAX = 32767  # int16 full scale used when writing wav files
WRITE_BLOCK_SAMPLES = 1 << 16  # long files are written block by block, never held whole


def have_espeak() -> bool:
    """Whether espeak-ng is on PATH; use in ``pytest.mark.skipif``."""
    return espeak.available()


def espeak_wav(text: str, path: str | Path, voice: str = espeak.DEFAULT_VOICE,
               speed: int = espeak.DEFAULT_SPEED) -> Path:
    """``text`` spoken by espeak-ng into a wav file at ``path`` (22.05 kHz mono int16)."""
    return espeak.speak_to_wav(text, path, voice, speed)


def speech(text: str, voice: str = espeak.DEFAULT_VOICE,
           speed: int = espeak.DEFAULT_SPEED) -> np.ndarray:
    """``text`` spoken by espeak-ng as 16 kHz mono float32 (the engines' rate)."""
    return espeak.speak(text, voice, speed)


def dbfs_to_rms(dbfs: float) -> float:
    """RMS amplitude of a signal whose RMS level is ``dbfs`` (0 dBFS = RMS of 1.0)."""
    return float(10.0 ** (dbfs / 20.0))


def rms_dbfs(x: np.ndarray) -> float:
    """RMS level of ``x`` in dBFS, same convention as :func:`dbfs_to_rms`."""
    return float(10.0 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def write_wav(path: str | Path, samples: np.ndarray, rate: int = DEFAULT_RATE) -> Path:
    """Write float samples (n,) or (n, channels) in [-1, 1] as an int16 wav."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    out = Path(path)
    with wave.open(str(out), "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(_to_int16(x).tobytes())
    return out


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * PCM16_MAX), -PCM16_MAX - 1, PCM16_MAX).astype("<i2")


def sine(freq: float, seconds: float, rate: int = DEFAULT_RATE, dbfs: float = -12.0) -> np.ndarray:
    """A sine at RMS level ``dbfs`` (its peak is 3 dB higher)."""
    t = np.arange(round(seconds * rate)) / rate
    return (np.sqrt(2.0) * dbfs_to_rms(dbfs) * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def sine_wav(
    path: str | Path,
    freq: float = 440.0,
    seconds: float = 1.0,
    rate: int = DEFAULT_RATE,
    channels: int = 1,
    dbfs: float = -12.0,
) -> Path:
    """A sine wav; with ``channels`` > 1 every channel holds the same tone."""
    x = sine(freq, seconds, rate, dbfs)
    return write_wav(path, np.repeat(x[:, None], channels, axis=1), rate)


def noise(dbfs: float, seconds: float, rate: int = DEFAULT_RATE, seed: int = 0) -> np.ndarray:
    """Gaussian white noise at RMS level ``dbfs``."""
    rng = np.random.default_rng(seed)
    return (dbfs_to_rms(dbfs) * rng.standard_normal(round(seconds * rate))).astype(np.float32)


def noise_wav(
    dbfs: float, seconds: float, path: str | Path, rate: int = DEFAULT_RATE, seed: int = 0
) -> Path:
    """Gaussian white noise at RMS level ``dbfs``, written block by block (any length)."""
    out = Path(path)
    rng = np.random.default_rng(seed)
    total = round(seconds * rate)
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        for start in range(0, total, WRITE_BLOCK_SAMPLES):
            n = min(WRITE_BLOCK_SAMPLES, total - start)
            w.writeframes(_to_int16(dbfs_to_rms(dbfs) * rng.standard_normal(n)).tobytes())
    return out


def encode_audio(
    path: str | Path, samples: np.ndarray, rate: int, codec: str, channels: int = 1
) -> Path:
    """Encode mono float samples with PyAV (e.g. ``libmp3lame``, ``libopus``, ``flac``, ``aac``).

    The container follows the file suffix; every channel gets the same signal.
    """
    out = Path(path)
    layout = "mono" if channels == 1 else "stereo"
    planes = np.repeat(np.asarray(samples, dtype=np.float32)[None, :], channels, axis=0)
    with av.open(str(out), mode="w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        if not isinstance(stream, av.AudioStream):
            raise ValueError(f"{codec} is not an audio codec")
        encode_clip(container, stream, planes, rate, fmt="fltp", layout=layout)
    return out
