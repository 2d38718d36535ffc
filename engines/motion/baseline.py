"""The baseline driver: audio → motion frames by fixed rules, no learning.

It is the comparison point for every lip-sync metric the learned generator reports, and the
fallback when no model is installed, so its rules are written here in full and must not drift
silently. Change a rule → change its constant and say why.

Rules (per 40 ms video frame ``i``, audio at 16 kHz, 640 samples per frame):

Mouth — from the audio around the frame
    * Spectrum of a 1024-sample (64 ms) Hann window centred on the frame; with ``lookahead_frames``
      = 0 the window ends at the frame's end instead (no future audio, less centred).
    * ``voiced_db`` = level of 80–4000 Hz in dBFS (RMS convention: a full-scale sine is −3 dBFS).
      ``jaw_open`` = ``jaw_max`` · smoothstep over ``gate_dbfs``..``full_dbfs`` (−40..−10 by
      default): a fixed curve, no whole-clip normalisation, so it streams; at or below the gate
      (silence, −40 dBFS room noise) the mouth is closed.
    * Brightness = level(1800–3500 Hz) − level(200–1200 Hz), i.e. F2 against F1: spread front
      vowels ('ee') are bright (about −4 dB) → ``lip_stretch`` (ramp −8..−3 dB). Dark frames
      (ramp −5..−9 dB) are back vowels; they get ``lip_round`` only when the power centroid of
      200–1200 Hz (a crude F1) is low (full below 450 Hz: 'oo', 'o'; none above 750 Hz): open
      vowels ('ah', F1 ≈ 800 Hz) are dark too but unrounded, the jaw shows them. Both are
      weighted by how voiced the frame is.
    * Fricative = level(4–8 kHz) well above the voiced band while the voiced band is quiet (s, f,
      sh): ``upper_lip_raise`` and a little stretch (teeth show), jaw nearly closed.
    * Stop closure: 10 ms block levels; if the frame is 5–15 dB or more below both the loudest
      block of the last 150 ms and the loudest block of the lookahead (speech on both sides of a
      short silence: p, b, m, and also k/t, which a level rule cannot tell apart), ``lip_press``
      rises and the jaw closes. With no lookahead only the past side is checked.
    * Each mouth value follows its target with a causal one-pole filter, faster when opening than
      when closing (time constants in seconds, so any fps behaves the same).

Life — procedural, deterministic from ``seed`` and the frame index
    * Head yaw/pitch/roll, translation and scale: sums of three sinusoids with incommensurate
      frequencies (0.03–0.5 Hz) and seeded phases; bounded by construction, so a ten-hour stream
      cannot drift. Sway grows by up to 50 % while speaking.
    * Breathing: ``head_ty`` sinusoid at 0.25 Hz.
    * Speech-coupled nods: ``head_pitch`` (down) and a little ``brow_raise`` follow emphasis, the
      fast voiced-level envelope minus the slow one (syllable onsets, stressed words).
    * Blinks: both eyes, 150–250 ms, intervals log-normal around 60/``blink_rate_per_min`` s
      (mostly 2–6 s at 15/min, clipped to 0.35–2.5 × the mean), 12 % of them doubled.
    * Gaze: saccades to a new nearby target every 0.6–3 s plus a slow micro-drift.
    * Silence never gives a frozen face: every life signal moves on every frame.

Controls — :meth:`BaselineDriver.set_controls` (the rules have no control input)
    * The controls' motion offset (emotion preset, gaze, distance: ``controls.motion_offset``)
      is added to every frame from then on, then clipped to the rig's range again.

Streaming: ``push()`` emits frame ``i`` as soon as samples up to the end of frame
``i + lookahead_frames`` have arrived, so the algorithmic latency is ``(1 + lookahead_frames)``
× 40 ms after the start of a frame (80 ms by default). Each frame is computed from the same
samples by the same scalar code whatever the chunking, and random draws happen in frame order,
so any chunking followed by ``flush()`` is bit-identical to ``drive()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vivify.engines.audio.audio_io import SAMPLE_RATE
from vivify.engines.motion.controls import Controls, motion_offset
from vivify.engines.motion.vector import INDEX, MOTION_DIM, clip_motion, rest_motion

# --- Audio analysis -------------------------------------------------------------------------
WINDOW_SAMPLES = 1024  # 64 ms analysis window: two pitch periods of a low voice, one F1 cycle.
BLOCK_SAMPLES = 160  # 10 ms level blocks for the stop-closure detector.
PRESS_PAST_BLOCKS = 15  # 150 ms of past audio in which the voiced peak before a closure lies.
HISTORY_SAMPLES = 4096  # past audio kept in memory (≥ window + past blocks), 256 ms.
LEVEL_FLOOR_DB = -120.0  # level reported for digital silence.
POWER_EPS = 1e-12  # mean-square floor, = LEVEL_FLOOR_DB.

VOICED_BAND_HZ = (80.0, 4000.0)  # where voiced speech (and the jaw's effect) lives
HIGH_BAND_HZ = (4000.0, 8000.0)  # fricative noise
F1_BAND_HZ = (200.0, 1200.0)  # first-formant region
F2_BAND_HZ = (1800.0, 3500.0)  # high second formant of front vowels

# --- Mouth rules (levels in dBFS, differences in dB) -----------------------------------------
VOICING_FULL_DB = -25.0  # voiced level at which stretch/round get full weight
STRETCH_BRIGHT_DB = (-8.0, -3.0)  # F2−F1 difference ramping lip_stretch from 0 to full
ROUND_BRIGHT_DB = (-9.0, -5.0)  # F2−F1 difference ramping lip_round from full down to 0
ROUND_F1_HZ = (450.0, 750.0)  # F1 centroid ramping lip_round from full down to 0 (open vowels)
LIP_SHAPE_MAX = 0.7  # most stretch/round a vowel alone produces
FRIC_OFFSET_DB = 12.0  # high−voiced difference (dB) + offset, over span, gives fricative weight
FRIC_SPAN_DB = 16.0
FRIC_HIGH_GATE_DB = (-55.0, -40.0)  # high band must be at least this loud to count
FRIC_UPPER_LIP = 0.5  # upper_lip_raise at full fricative
FRIC_STRETCH = 0.3  # extra lip_stretch at full fricative (teeth showing for s)
FRIC_JAW_CUT = 0.7  # fraction of jaw opening removed at full fricative
LOWER_LIP_FROM_JAW = 0.3  # lower_lip_depress follows the jaw this much
PRESS_MIN_DIP_DB = 5.0  # dip below the surrounding voiced peaks where lip press starts
PRESS_FULL_DIP_DB = 15.0  # dip where lip press is full
PRESS_MAX_LEVEL_DB = -26.0  # a frame louder than this is not a closure
PRESS_PEAK_MIN_DB = -32.0  # both sides must reach this level to count as speech

# Follower time constants (seconds): (attack when rising, release when falling).
TAU_JAW = (0.02, 0.06)
INTERRUPT_MOUTH_KEEP = 0.3  # share of the mouth's opening kept on the frame after clear()
TAU_LIP_SHAPE = (0.05, 0.08)
TAU_UPPER_LIP = (0.03, 0.07)
TAU_PRESS = (0.015, 0.05)
TAU_SPEECH_ENV = (0.10, 0.50)  # speech activity, scales head sway
TAU_EMPH_FAST = (0.04, 0.12)
TAU_EMPH_SLOW = (0.60, 0.60)
TAU_GAZE = (0.03, 0.03)  # saccades land within a frame or two

# --- Life (amplitudes in motion units, frequencies in Hz) ------------------------------------
SWAY_WEIGHTS = (0.55, 0.30, 0.15)  # sum to 1: the sway never exceeds its amplitude
YAW_HZ = (0.047, 0.113, 0.291)
PITCH_HZ = (0.061, 0.149, 0.377)
ROLL_HZ = (0.037, 0.097, 0.233)
TX_HZ = (0.029, 0.083, 0.199)
SCALE_HZ = (0.023, 0.071, 0.163)
FREQ_JITTER = 0.15  # seeded ± relative jitter on every frequency
PITCH_REL, ROLL_REL, TX_REL, SCALE_REL = 0.7, 0.5, 0.25, 0.15  # × sway_amplitude
SPEECH_SWAY_GAIN = 0.5  # sway × (1 + this · speech activity)
BREATH_HZ = 0.25
NOD_TY = 0.3  # head_ty follows the nod this much (the head dips as it nods)
EMPH_BROW = 0.25  # brow_raise per unit of positive emphasis
BLINK_DURATION_S = (0.15, 0.25)
BLINK_CLOSE_FRACTION = 0.35  # share of a blink spent closing; opening is slower
BLINK_INTERVAL_SIGMA = 0.35  # log-normal spread of inter-blink intervals
BLINK_INTERVAL_CLIP = (0.35, 2.5)  # × mean interval
DOUBLE_BLINK_P = 0.12
DOUBLE_BLINK_GAP_S = (0.08, 0.2)
GAZE_HOLD_S = (0.6, 3.0)
GAZE_Y_REL = 0.6  # vertical saccades are smaller than horizontal
GAZE_DRIFT_REL = 0.15  # micro-drift amplitude relative to gaze_amplitude
GAZE_DRIFT_HZ = (0.13, 0.07)

_EMPTY = np.zeros((0, MOTION_DIM), dtype=np.float32)


@dataclass(frozen=True)
class BaselineConfig:
    """Settings of the baseline driver; saved next to metric results so they can be reproduced."""

    fps: int = 25
    lookahead_frames: int = 1  # future frames of audio each frame may see (latency, 40 ms each)
    blink_rate_per_min: float = 15.0  # 0 disables blinks
    seed: int = 0
    sway_amplitude: float = 0.15  # head yaw sway, fraction of the ±1 range
    nod_gain: float = 0.3  # head_pitch per unit of speech emphasis
    breath_amplitude: float = 0.04  # head_ty
    gaze_amplitude: float = 0.15
    jaw_max: float = 0.8
    gate_dbfs: float = -40.0  # voiced level at or below which the mouth stays closed
    full_dbfs: float = -10.0  # voiced level that opens the jaw to jaw_max

    def __post_init__(self) -> None:
        if self.fps <= 0 or (SAMPLE_RATE // self.fps) % BLOCK_SAMPLES or SAMPLE_RATE % self.fps:
            raise ValueError(f"fps must divide {SAMPLE_RATE // BLOCK_SAMPLES} (10 ms blocks), "
                             f"got {self.fps}")
        _check_range("lookahead_frames", self.lookahead_frames, 0, 4)
        _check_range("blink_rate_per_min", self.blink_rate_per_min, 0.0, 60.0)
        _check_range("sway_amplitude", self.sway_amplitude, 0.0, 0.5)
        _check_range("nod_gain", self.nod_gain, 0.0, 1.0)
        _check_range("breath_amplitude", self.breath_amplitude, 0.0, 0.2)
        _check_range("gaze_amplitude", self.gaze_amplitude, 0.0, 0.5)
        _check_range("jaw_max", self.jaw_max, 0.0, 1.0)
        _check_range("gate_dbfs", self.gate_dbfs, -100.0, 0.0)
        _check_range("full_dbfs", self.full_dbfs, -100.0, 0.0)
        if self.full_dbfs <= self.gate_dbfs:
            raise ValueError(f"full_dbfs ({self.full_dbfs}) must be above gate_dbfs "
                             f"({self.gate_dbfs})")

    @property
    def samples_per_frame(self) -> int:
        return SAMPLE_RATE // self.fps


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high or value != value:  # `value != value` catches NaN
        raise ValueError(f"{name} must be within {low}..{high}, got {value}")


def _smoothstep(x: float) -> float:
    """0 below 0, 1 above 1, a C1 ramp between: soft gates without a visible kink."""
    x = min(1.0, max(0.0, x))
    return x * x * (3.0 - 2.0 * x)


def _ramp(value: float, low: float, high: float) -> float:
    return _smoothstep((value - low) / (high - low))


def _db(mean_square: float) -> float:
    return 10.0 * math.log10(max(mean_square, POWER_EPS))


# --- Audio features --------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameFeatures:
    """What the mouth rules see of one frame's audio (levels in dBFS)."""

    voiced_db: float
    high_db: float
    brightness_db: float  # F2 band minus F1 band
    f1_hz: float  # power centroid of the F1 band: low for close vowels, high for open ones
    dip_db: float  # how far the frame sits below the speech around it (0 if none)


class _Spectrum:
    """Band levels of one Hann-windowed analysis window, scaled so a band's power is its
    contribution to the mean square (levels comparable with plain RMS dBFS)."""

    def __init__(self) -> None:
        self.window = np.hanning(WINDOW_SAMPLES).astype(np.float32)
        # one-sided power → mean square; divide out the window's own power
        self.scale = 2.0 / (WINDOW_SAMPLES**2 * float(np.mean(self.window.astype(np.float64) ** 2)))
        freqs = np.fft.rfftfreq(WINDOW_SAMPLES, 1.0 / SAMPLE_RATE)
        self.bands = {name: _band_slice(freqs, lo_hi) for name, lo_hi in (
            ("voiced", VOICED_BAND_HZ), ("high", HIGH_BAND_HZ),
            ("f1", F1_BAND_HZ), ("f2", F2_BAND_HZ))}
        self.f1_freqs = freqs[self.bands["f1"]]

    def analyse(self, segment: np.ndarray) -> tuple[dict[str, float], float]:
        """Band levels (dBFS) and the F1-band power centroid (Hz) of one window."""
        power = np.abs(np.fft.rfft(segment * self.window)) ** 2  # (WINDOW_SAMPLES // 2 + 1,)
        levels = {name: _db(float(power[sl].sum()) * self.scale)
                  for name, sl in self.bands.items()}
        f1_power = power[self.bands["f1"]]
        total = float(f1_power.sum())
        centroid = float((f1_power * self.f1_freqs).sum()) / total if total > 0 else 0.0
        return levels, centroid


def _band_slice(freqs: np.ndarray, band: tuple[float, float]) -> slice:
    idx = np.flatnonzero((freqs >= band[0]) & (freqs < band[1]))
    return slice(int(idx[0]), int(idx[-1]) + 1)


def _block_power(samples: np.ndarray) -> list[float]:
    """Mean square of consecutive 10 ms blocks (length is a multiple of BLOCK_SAMPLES)."""
    blocks = samples.reshape(-1, BLOCK_SAMPLES)
    return [float(ms) for ms in np.mean(np.square(blocks, dtype=np.float64), axis=1)]


def _dip_db(past: list[float], core: list[float], future: list[float]) -> float:
    """Depth (dB) of a short silence between speech: a stop's closure or the hum of an 'm'.

    Arguments are 10 ms block mean squares before, inside and after the frame. Without
    lookahead ``future`` is empty and only the speech before the dip is required.
    """
    frame_db = _db(sum(core) / len(core))
    if frame_db > PRESS_MAX_LEVEL_DB or not past:
        return 0.0
    side_db = _db(min([max(past)] + ([max(future)] if future else [])))
    if side_db < PRESS_PEAK_MIN_DB:
        return 0.0
    return max(0.0, side_db - frame_db)


# --- Mouth -----------------------------------------------------------------------------------


def mouth_targets(features: FrameFeatures, config: BaselineConfig) -> dict[str, float]:
    """The mouth shape one frame's audio asks for, before smoothing."""
    jaw = config.jaw_max * _ramp(features.voiced_db, config.gate_dbfs, config.full_dbfs)
    voicing = _ramp(features.voiced_db, config.gate_dbfs, VOICING_FULL_DB)
    fric = _ramp(features.high_db - features.voiced_db, -FRIC_OFFSET_DB,
                 FRIC_SPAN_DB - FRIC_OFFSET_DB) * _ramp(features.high_db, *FRIC_HIGH_GATE_DB)
    press = _ramp(features.dip_db, PRESS_MIN_DIP_DB, PRESS_FULL_DIP_DB) * (1.0 - fric)
    jaw *= (1.0 - FRIC_JAW_CUT * fric) * (1.0 - press)
    stretch = (LIP_SHAPE_MAX * voicing * _ramp(features.brightness_db, *STRETCH_BRIGHT_DB)
               + FRIC_STRETCH * fric)
    darkness = 1.0 - _ramp(features.brightness_db, *ROUND_BRIGHT_DB)
    closeness = 1.0 - _ramp(features.f1_hz, *ROUND_F1_HZ)
    round_ = LIP_SHAPE_MAX * voicing * darkness * closeness * (1.0 - fric)
    return {
        "jaw_open": jaw,
        "lip_stretch": stretch,
        "lip_round": round_,
        "upper_lip_raise": FRIC_UPPER_LIP * fric,
        "lower_lip_depress": LOWER_LIP_FROM_JAW * jaw,
        "lip_press": press,
    }


class _Follower:
    """Causal asymmetric one-pole filter: moves a fraction of the way to its target each frame.

    Rising uses the attack time constant, falling the release one; both are given in seconds and
    turned into per-frame coefficients, so the feel does not depend on fps.
    """

    def __init__(self, tau_s: tuple[float, float], fps: int, value: float = 0.0) -> None:
        self.attack = 1.0 - math.exp(-1.0 / (fps * tau_s[0]))
        self.release = 1.0 - math.exp(-1.0 / (fps * tau_s[1]))
        self.value = value

    def step(self, target: float) -> float:
        coef = self.attack if target > self.value else self.release
        self.value += coef * (target - self.value)
        return self.value


_MOUTH_TAUS: dict[str, tuple[float, float]] = {
    "jaw_open": TAU_JAW,
    "lip_stretch": TAU_LIP_SHAPE,
    "lip_round": TAU_LIP_SHAPE,
    "upper_lip_raise": TAU_UPPER_LIP,
    "lower_lip_depress": TAU_JAW,
    "lip_press": TAU_PRESS,
}


# --- Life ------------------------------------------------------------------------------------


class _Sway:
    """A bounded quasi-periodic signal in [-1, 1]: weighted sinusoids with seeded phases and
    jittered, mutually incommensurate frequencies (it never repeats visibly, never drifts)."""

    def __init__(self, base_hz: tuple[float, ...], rng: np.random.Generator) -> None:
        self.terms = [
            (w, 2.0 * math.pi * f * (1.0 + FREQ_JITTER * float(rng.uniform(-1, 1))),
             float(rng.uniform(0.0, 2.0 * math.pi)))
            for w, f in zip(SWAY_WEIGHTS, base_hz, strict=True)
        ]

    def at(self, t: float) -> float:
        return sum(w * math.sin(omega * t + phase) for w, omega, phase in self.terms)


class _Blinks:
    """Blink events scheduled in frame order from a seeded generator.

    Each blink is a precomputed list of closure values (quick close, slower open) whose peak
    frame is exactly 1, so the renderer always shows a fully closed lid at 25 fps.
    """

    def __init__(self, config: BaselineConfig, rng: np.random.Generator) -> None:
        self.fps = config.fps
        self.rng = rng
        self.mean_s = 60.0 / config.blink_rate_per_min if config.blink_rate_per_min > 0 else 0.0
        self.profile: list[float] = []
        self.start = -1
        self.next_start = (
            round(float(rng.uniform(0.3, 1.0)) * self.mean_s * self.fps) if self.mean_s else -1
        )

    def _profile(self) -> list[float]:
        n = max(3, round(float(self.rng.uniform(*BLINK_DURATION_S)) * self.fps))
        values = []
        for k in range(n):
            u = (k + 0.5) / n
            if u < BLINK_CLOSE_FRACTION:
                values.append(math.sin(0.5 * math.pi * u / BLINK_CLOSE_FRACTION) ** 2)
            else:
                rest = (u - BLINK_CLOSE_FRACTION) / (1.0 - BLINK_CLOSE_FRACTION)
                values.append(math.cos(0.5 * math.pi * rest) ** 2)
        peak = max(values)
        return [v / peak for v in values]

    def _schedule_after(self, end: int) -> int:
        if float(self.rng.uniform()) < DOUBLE_BLINK_P:
            return end + max(1, round(float(self.rng.uniform(*DOUBLE_BLINK_GAP_S)) * self.fps))
        z = float(self.rng.standard_normal())
        factor = math.exp(BLINK_INTERVAL_SIGMA * z - 0.5 * BLINK_INTERVAL_SIGMA**2)
        factor = min(BLINK_INTERVAL_CLIP[1], max(BLINK_INTERVAL_CLIP[0], factor))
        return max(end + 1, self.start + round(factor * self.mean_s * self.fps))

    def at(self, frame: int) -> float:
        if self.next_start >= 0 and frame >= self.next_start:
            self.start, self.profile = frame, self._profile()
            self.next_start = self._schedule_after(frame + len(self.profile))
        k = frame - self.start
        return self.profile[k] if 0 <= k < len(self.profile) else 0.0


class _Gaze:
    """Saccades between nearby fixation targets, plus a slow micro-drift."""

    def __init__(self, config: BaselineConfig, rng: np.random.Generator) -> None:
        self.fps = config.fps
        self.amp = config.gaze_amplitude
        self.rng = rng
        self.next_move = 0
        self.target = (0.0, 0.0)
        self.x = _Follower(TAU_GAZE, config.fps)
        self.y = _Follower(TAU_GAZE, config.fps)
        self.phase = (float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi)))

    def at(self, frame: int) -> tuple[float, float]:
        if frame >= self.next_move:
            x = float(np.clip(self.rng.normal(0.0, 0.5), -1.0, 1.0))
            y = float(np.clip(self.rng.normal(0.0, 0.5), -1.0, 1.0))
            self.target = (self.amp * x, self.amp * GAZE_Y_REL * y)
            self.next_move = frame + max(1, round(float(self.rng.uniform(*GAZE_HOLD_S)) * self.fps))
        t = frame / self.fps
        drift = GAZE_DRIFT_REL * self.amp
        dx = drift * math.sin(2 * math.pi * GAZE_DRIFT_HZ[0] * t + self.phase[0])
        dy = drift * math.sin(2 * math.pi * GAZE_DRIFT_HZ[1] * t + self.phase[1])
        return self.x.step(self.target[0]) + dx, self.y.step(self.target[1]) + dy


class _Life:
    """Head motion, breathing, blinks and gaze: everything that moves when nobody speaks."""

    def __init__(self, config: BaselineConfig) -> None:
        self.config = config
        rng = np.random.default_rng([config.seed, 0])
        self.yaw, self.pitch, self.roll = (_Sway(hz, rng) for hz in (YAW_HZ, PITCH_HZ, ROLL_HZ))
        self.tx, self.scale = _Sway(TX_HZ, rng), _Sway(SCALE_HZ, rng)
        self.breath_phase = float(rng.uniform(0, 2 * math.pi))
        self.blinks = _Blinks(config, np.random.default_rng([config.seed, 1]))
        self.gaze = _Gaze(config, np.random.default_rng([config.seed, 2]))
        self.activity = _Follower(TAU_SPEECH_ENV, config.fps)
        self.emph_fast = _Follower(TAU_EMPH_FAST, config.fps)
        self.emph_slow = _Follower(TAU_EMPH_SLOW, config.fps)

    def step(self, frame: int, loudness: float) -> dict[str, float]:
        """Life values for ``frame``; ``loudness`` in 0..1 is the unsmoothed jaw drive."""
        c = self.config
        t = frame / c.fps
        activity = self.activity.step(min(1.0, 2.0 * loudness))
        emphasis = self.emph_fast.step(loudness) - self.emph_slow.step(loudness)
        amp = c.sway_amplitude * (1.0 + SPEECH_SWAY_GAIN * activity)
        nod = c.nod_gain * emphasis
        blink = self.blinks.at(frame)
        gaze_x, gaze_y = self.gaze.at(frame)
        return {
            "head_yaw": amp * self.yaw.at(t),
            "head_pitch": amp * PITCH_REL * self.pitch.at(t) + nod,
            "head_roll": amp * ROLL_REL * self.roll.at(t),
            "head_tx": amp * TX_REL * self.tx.at(t),
            "head_ty": c.breath_amplitude * math.sin(2 * math.pi * BREATH_HZ * t
                                                     + self.breath_phase) + NOD_TY * nod,
            "head_scale": amp * SCALE_REL * self.scale.at(t),
            "blink_l": blink,
            "blink_r": blink,
            "gaze_x": gaze_x,
            "gaze_y": gaze_y,
            "brow_raise": EMPH_BROW * max(emphasis, 0.0),
        }


# --- The driver ------------------------------------------------------------------------------


class BaselineDriver:
    """Streaming audio → motion by the rules in the module docstring.

    Feed 16 kHz mono float32 with :meth:`push` in any chunk sizes; call :meth:`flush` at the end of
    a segment; :meth:`clear` on interruption. Not thread-safe: one driver per session.
    """

    def __init__(self, config: BaselineConfig | None = None) -> None:
        self.config = config or BaselineConfig()
        self._spf = self.config.samples_per_frame
        self._spectrum = _Spectrum()
        self._life = _Life(self.config)
        self._mouth = {name: _Follower(tau, self.config.fps) for name, tau in _MOUTH_TAUS.items()}
        # Audio timeline: absolute sample 0 is the start of frame 0; before it lies silence.
        self._buf = np.zeros(HISTORY_SAMPLES, dtype=np.float32)
        self._buf_start = -HISTORY_SAMPLES
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self._frames = 0
        self._offset: np.ndarray | None = None  # the controls' offset; None = no controls

    @property
    def frames_emitted(self) -> int:
        """Frames returned so far; frame ``k`` shows the audio at ``k / fps`` seconds."""
        return self._frames

    @property
    def latency_samples(self) -> int:
        """Audio that must follow a frame's start before it can be emitted (frame + lookahead)."""
        return (1 + self.config.lookahead_frames) * self._spf

    # -- streaming API --

    def set_controls(self, controls: Controls) -> None:
        """Frames emitted from now on carry the controls' motion offset."""
        offset = motion_offset(controls)
        self._offset = offset if offset.any() else None

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Add audio; return the (n, MOTION_DIM) float32 frames that became ready (n ≥ 0)."""
        if np.ndim(chunk) != 1:
            raise ValueError(f"push() takes mono audio of shape (n,), got {np.shape(chunk)}")
        x = np.asarray(chunk, dtype=np.float32)
        if x.size == 0:
            return _EMPTY.copy()
        if not np.isfinite(x).all():
            x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
        self._pending.append(x)
        self._pending_len += x.size
        if self._available_end() < self._ready_end(self._frames):
            return _EMPTY.copy()
        return self._emit_ready()

    def flush(self) -> np.ndarray:
        """End of segment: pad with silence and emit every frame that holds pushed audio.

        The partial last frame is completed with silence, so the timeline stays frame-aligned
        and a later :meth:`push` starts a new segment at the next frame.
        """
        self._consolidate()
        end = self._buf_start + self._buf.size
        n_total = -(-end // self._spf)  # ceil: a partial frame still shows its audio
        needed = self._ready_end(n_total - 1) if n_total > self._frames else end
        if needed > end:
            self._buf = np.concatenate([self._buf, np.zeros(needed - end, dtype=np.float32)])
        frames = self._emit_ready(limit=n_total)
        self._truncate_to(self._frames * self._spf)
        return frames

    def clear(self) -> None:
        """Interruption: drop audio not yet shown. Head, blinks and gaze continue unbroken; the
        mouth is pulled half-way shut at once and its release finishes the close within ~3
        frames, so an interrupted face is idle within about 100 ms, as people stop talking."""
        self._consolidate()
        self._truncate_to(self._frames * self._spf)
        for follower in self._mouth.values():
            follower.value *= INTERRUPT_MOUTH_KEEP

    def drive(self, audio: np.ndarray) -> np.ndarray:
        """Offline: all frames for ``audio`` (ceil(len / samples_per_frame) of them).

        Exactly ``push(audio)`` then ``flush()``: on a fresh driver it is the reference every
        streaming run must match; on a used one it continues that driver's timeline.
        """
        return np.concatenate([self.push(audio), self.flush()])

    # -- internals --

    def _ready_end(self, frame: int) -> int:
        """Absolute sample index up to which audio must exist to compute ``frame``."""
        return (frame + 1 + self.config.lookahead_frames) * self._spf

    def _available_end(self) -> int:
        return self._buf_start + self._buf.size + self._pending_len

    def _consolidate(self) -> None:
        """Join pending chunks onto the buffer, dropping history no future frame can need."""
        keep_from = self._frames * self._spf - HISTORY_SAMPLES
        cut = max(0, keep_from - self._buf_start)
        self._buf = np.concatenate([self._buf[cut:], *self._pending])
        self._buf_start += cut
        self._pending, self._pending_len = [], 0

    def _truncate_to(self, end: int) -> None:
        self._buf = self._buf[: max(0, end - self._buf_start)].copy()

    def _emit_ready(self, limit: int | None = None) -> np.ndarray:
        self._consolidate()
        out = []
        end = self._buf_start + self._buf.size
        while self._ready_end(self._frames) <= end and (limit is None or self._frames < limit):
            out.append(self._frame(self._frames))
            self._frames += 1
        return np.stack(out) if out else _EMPTY.copy()

    def _samples(self, start: int, stop: int) -> np.ndarray:
        return self._buf[start - self._buf_start : stop - self._buf_start]

    def features(self, frame: int) -> FrameFeatures:
        """Audio features of ``frame`` from the buffered audio (exposed for tests and plots)."""
        spf, look = self._spf, self.config.lookahead_frames
        centre = frame * spf + spf // 2
        win_end = min(centre + WINDOW_SAMPLES // 2, (frame + 1 + look) * spf)
        levels, f1_hz = self._spectrum.analyse(self._samples(win_end - WINDOW_SAMPLES, win_end))
        past_start = frame * spf - PRESS_PAST_BLOCKS * BLOCK_SAMPLES
        blocks = _block_power(self._samples(past_start, (frame + 1 + look) * spf))
        n_core = spf // BLOCK_SAMPLES
        past = blocks[:PRESS_PAST_BLOCKS]
        core = blocks[PRESS_PAST_BLOCKS : PRESS_PAST_BLOCKS + n_core]
        future = blocks[PRESS_PAST_BLOCKS + n_core :]
        return FrameFeatures(
            voiced_db=levels["voiced"],
            high_db=levels["high"],
            brightness_db=levels["f2"] - levels["f1"],
            f1_hz=f1_hz,
            dip_db=_dip_db(past, core, future),
        )

    def _frame(self, frame: int) -> np.ndarray:
        targets = mouth_targets(self.features(frame), self.config)
        vec = rest_motion()
        for name, follower in self._mouth.items():
            vec[INDEX[name]] = follower.step(targets[name])
        loudness = targets["jaw_open"] / self.config.jaw_max if self.config.jaw_max else 0.0
        for name, value in self._life.step(frame, loudness).items():
            vec[INDEX[name]] += value
        out = clip_motion(vec)
        # On the clipped frame, clipped again: the frame the rules make, moved by the offset.
        return out if self._offset is None else clip_motion(out + self._offset)
