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
from scipy import ndimage, signal

from vivify.engines.audio.audio_encode import encode_clip

RATE = 16_000
OPUS_RATE = 48_000  # libopus runs at 48 kHz in WebRTC
OPUS_KBPS = (8, 32)
SNR_DB = (5.0, 30.0)
GAIN_DB = (-12.0, 6.0)
SPEED = (0.9, 1.1)
RT60_S = (0.15, 0.6)
BAND_HZ = (300.0, 3400.0)  # telephone band
VTLP_ALPHA = (0.88, 1.12)  # vocal-tract length: formants scaled by this (child ↔ adult male)
PITCH_SEMITONES = (-4.0, 4.0)
TILT_DB_PER_OCTAVE = (-4.0, 3.0)  # spectral tilt around 1 kHz (a dull or a bright microphone)
EQ_BANDS = 3  # random peaking filters
EQ_GAIN_DB = (-9.0, 9.0)
MU = 255.0  # G.711 μ-law
VOCODER_ORDER = 18  # LPC poles: 9 resonances below 8 kHz
VOCODER_HOP = 80  # 5 ms frames, as parametric synthesisers use
VOCODER_FRAME = 512  # 32 ms analysis window
VOCODER_F0_HZ = (60.0, 400.0)
VOCODER_BANDWIDTH = 0.985  # pole radius scale: no filter rings on a pulse when frames switch
VOCODER_LEVEL_SAMPLES = 320  # 20 ms: the span the source's level is measured over
VOCODER_VOICED = 0.5  # normalised autocorrelation at the pitch lag above which a frame is voiced


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
        encode_clip(out, stream, up[None, :], OPUS_RATE, fmt="flt", layout="mono")
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


def vtlp(x: np.ndarray, alpha: float) -> np.ndarray:
    """Vocal-tract length perturbation: the spectral envelope's frequencies × ``alpha``
    (piecewise linear, so the band edge stays put), timing untouched. Each STFT frame's
    magnitude is read at f / alpha; its phase is kept (the harmonics keep their pitch)."""
    f, _, z = signal.stft(x, fs=RATE, nperseg=512, noverlap=384)
    top, cut = float(f[-1]), 0.8 * float(f[-1])
    src = np.where(f <= cut, f / alpha,  # read the envelope at f / alpha ...
                   cut / alpha + (f - cut) * (top - cut / alpha) / (top - cut))  # ... to the top
    mag = np.abs(z)
    warped = np.stack([np.interp(src, f, mag[:, k]) for k in range(mag.shape[1])], axis=1)
    _, y = signal.istft(warped * np.exp(1j * np.angle(z)), fs=RATE, nperseg=512, noverlap=384)
    return _same_length_and_level(x, y)


def vocode(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same speech as a *parametric* synthesiser would say it (HTS, LPC diphone voices):
    per 5 ms frame an LPC envelope (order 18) and a voiced/unvoiced pitch decision, then
    re-synthesised from a pulse train at the smoothed pitch (voiced) or white noise (unvoiced)
    through that all-pole filter at the frame's residual level. The envelope — what the mouth
    does — and the timeline stay; the glottal source becomes buzzy and regular, the way
    statistical-parametric and vocoded voices sound. A little noise is mixed into voiced frames
    (``rng``: 0–30 %), as mixed-excitation vocoders do."""
    import librosa

    n = x.size
    pad = np.pad(x.astype(np.float64), (VOCODER_FRAME // 2, VOCODER_FRAME))
    frames = librosa.util.frame(pad, frame_length=VOCODER_FRAME, hop_length=VOCODER_HOP)
    frames = frames[:, : -(-n // VOCODER_HOP)].T  # (F, L), frame k centred on sample k·hop
    windowed = frames * np.hanning(VOCODER_FRAME)
    windowed = windowed + 1e-6 * np.random.default_rng(0).standard_normal(frames.shape)
    a = librosa.lpc(windowed, order=VOCODER_ORDER, axis=-1)  # (F, order + 1), a[:, 0] = 1
    a = a * VOCODER_BANDWIDTH ** np.arange(VOCODER_ORDER + 1)  # poles off the unit circle
    spec = np.fft.rfft(frames, 2 * VOCODER_FRAME, axis=-1)  # periodicity: the plain frame
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=-1)[:, :VOCODER_FRAME]
    lo, hi = int(RATE / VOCODER_F0_HZ[1]), int(RATE / VOCODER_F0_HZ[0])
    norm = ac[:, lo:hi] / (ac[:, :1] + 1e-12) * VOCODER_FRAME / (VOCODER_FRAME - np.arange(lo, hi))
    lag = lo + np.argmax(norm, axis=-1)
    voiced = signal.medfilt((norm.max(axis=-1) > VOCODER_VOICED).astype(float), 5) > 0.5
    f0 = signal.medfilt(np.where(voiced, RATE / lag, 0.0), 5)
    f0 = np.where(voiced & (f0 > 0), f0, np.median(f0[voiced]) if voiced.any() else 120.0)
    f0_s = np.repeat(f0, VOCODER_HOP)[:n]
    phase = np.cumsum(f0_s / RATE)
    at = np.flatnonzero(np.diff(np.floor(phase)) > 0) + 1  # first sample past each period
    past = (phase[at] - np.floor(phase[at])) / (f0_s[at] / RATE)  # how far past, in samples
    pulses = np.zeros(n)  # each pulse split between its two samples: a fractional position,
    np.add.at(pulses, at, 1.0 - past)  # so the period is exact (integer ones jitter by a
    np.add.at(pulses, at - 1, past)  # sample and halve the waveform's periodicity)
    pulses *= np.sqrt(RATE / f0_s)  # unit power per sample at any pitch
    noise = rng.standard_normal(n)
    mix = float(rng.uniform(0.0, 0.3))
    v_s = np.repeat(voiced, VOCODER_HOP)[:n]
    source = np.where(v_s, np.sqrt(1 - mix) * pulses + np.sqrt(mix) * noise, noise)
    residual = np.zeros(n)  # the input's prediction error, each block through its own filter
    for k in range(a.shape[0]):
        s0, s1 = k * VOCODER_HOP, min(n, (k + 1) * VOCODER_HOP)
        h0 = max(0, s0 - VOCODER_ORDER)  # with its history: no start-up transient
        residual[s0:s1] = signal.lfilter(a[k], [1.0], x[h0:s1].astype(np.float64))[s0 - h0:]
    # its level over ~20 ms (a few pitch periods: the input's own glottal pulses must not
    # modulate the new source), read at each block's centre
    power = ndimage.uniform_filter1d(residual**2, size=VOCODER_LEVEL_SAMPLES, mode="nearest")
    levels = np.sqrt(power[np.minimum(n - 1, np.arange(a.shape[0]) * VOCODER_HOP
                                      + VOCODER_HOP // 2)] + 1e-12)
    out, zi = np.zeros(n), np.zeros(VOCODER_ORDER)
    for k in range(a.shape[0]):
        s0, s1 = k * VOCODER_HOP, min(n, (k + 1) * VOCODER_HOP)
        out[s0:s1], zi = signal.lfilter([levels[k]], a[k], source[s0:s1], zi=zi)
    return _same_length_and_level(x, out.astype(np.float32))


def pitch_shift(x: np.ndarray, semitones: float) -> np.ndarray:
    """Pitch (and formants, by design) shifted, duration unchanged (librosa's phase vocoder
    + resampling): a higher or lower voice on the same timeline as the labels."""
    import librosa

    y = librosa.effects.pitch_shift(x.astype(np.float32), sr=RATE, n_steps=semitones)
    return _same_length_and_level(x, y)


def equalise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random microphone: a spectral tilt and a few peaking filters (RBJ biquads)."""
    tilt = float(rng.uniform(*TILT_DB_PER_OCTAVE))
    f, _, z = signal.stft(x, fs=RATE, nperseg=512, noverlap=384)
    octaves = np.log2(np.maximum(f, 50.0) / 1000.0)
    z = z * (10 ** (tilt * octaves / 20))[:, None]
    _, y = signal.istft(z, fs=RATE, nperseg=512, noverlap=384)
    y = y.astype(np.float64)
    for _ in range(EQ_BANDS):
        f0 = float(np.exp(rng.uniform(np.log(150.0), np.log(6000.0))))
        gain = float(rng.uniform(*EQ_GAIN_DB))
        q = float(rng.uniform(0.5, 3.0))
        y = signal.lfilter(*_peaking(f0, gain, q), y)
    return _same_length_and_level(x, y)


def _peaking(f0: float, gain_db: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / RATE
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
    return b / den[0], den / den[0]


def phone_line(x: np.ndarray) -> np.ndarray:
    """A telephone: 300–3400 Hz, 8 kHz, G.711 μ-law (8 bits), back to 16 kHz."""
    narrow = resample(band_limit(x), RATE, 8000)
    peak = float(np.max(np.abs(narrow))) + 1e-9
    v = np.clip(narrow / peak, -1, 1)
    coded = np.sign(v) * np.log1p(MU * np.abs(v)) / np.log1p(MU)
    coded = np.round(coded * 127) / 127  # 8 bits
    decoded = np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(MU)) / MU * peak
    return _same_length_and_level(x, resample(decoded.astype(np.float32), 8000, RATE))


def _same_length_and_level(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``y`` cut or padded to ``x``'s length, at ``x``'s RMS: augmentations change the sound,
    never the timeline the labels are on or the loudness (gain has its own step)."""
    out = np.zeros(x.size, np.float32)
    n = min(x.size, y.size)
    out[:n] = y[:n]
    scale = np.sqrt(np.mean(x.astype(np.float64) ** 2) / (np.mean(out.astype(np.float64) ** 2)
                                                           + 1e-12))
    return np.clip(out * scale, -1.0, 1.0).astype(np.float32)


def augment(x: np.ndarray, rng: np.random.Generator, vocoder: float = 0.0
            ) -> tuple[np.ndarray, list[str]]:
    """A random chain of augmentations (30 % of clips stay clean). Returns audio and the names.

    Speaker first (a vocoded voice, vocal tract, pitch), then the room, the microphone and the
    channel: the order sound takes from a mouth to our input. ``vocoder`` is the share of
    augmented clips re-spoken by :func:`vocode`; at 0 no draw is made for it, so a corpus
    built without it is the one revisions 6 and earlier were trained on, draw for draw.
    """
    applied: list[str] = []
    if rng.uniform() < 0.3:
        return x, applied
    if vocoder > 0 and rng.uniform() < vocoder:
        x = vocode(x, rng)
        applied.append("vocoder")
    if rng.uniform() < 0.35:
        x = vtlp(x, float(rng.uniform(*VTLP_ALPHA)))
        applied.append("vtlp")
    if rng.uniform() < 0.25:
        x = pitch_shift(x, float(rng.uniform(*PITCH_SEMITONES)))
        applied.append("pitch")
    if rng.uniform() < 0.3:
        x = reverb(x, float(rng.uniform(*RT60_S)), rng)
        applied.append("reverb")
    if rng.uniform() < 0.3:
        x = equalise(x, rng)
        applied.append("eq")
    if rng.uniform() < 0.2:
        x = band_limit(x)
        applied.append("bandlimit")
    elif rng.uniform() < 0.1:
        x = phone_line(x)
        applied.append("phone")
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
