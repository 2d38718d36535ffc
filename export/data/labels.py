"""Phonemes → visemes → rig mouth targets, plus head, blink, brow and gaze labels.

Mouth: coarticulation by dominance functions (Cohen & Massaro 1993). Every phoneme segment
``i`` has a viseme with a target ``T_i`` for each mouth dimension and a dominance ``α_i`` (per
dimension). Inside its segment a phoneme's dominance is ``α_i``; outside it decays as
``α_i · exp(−θ · d)`` with ``d`` the distance (s) to the segment, using ``THETA_ANTICIPATION``
before it and ``THETA_CARRYOVER`` after it. The mouth value at time ``t`` is the
dominance-weighted mean of all targets. Weak consonants (k, g, h, t, d, n, l) have low
dominance, so their lips take the neighbouring vowels' shape ("key" vs "coo"); bilabials have
a very high lip-press dominance, so the lips close even in 40 ms segments; silence has a
moderate dominance, so the mouth closes in pauses but anticipates the next word.

Life (not predictable from audio, learned as a distribution): sway = seeded sums of slow
sinusoids, breathing at 0.25 Hz, nods on stressed (long) vowels with a brow raise on some,
blinks as a Poisson process plus extra blinks at phrase boundaries (pauses ≥ 150 ms), gaze
saccades. The controls (gaze, head distance, emotion) shift the labels the way the rig's
presets do, so the model learns to follow them.
"""

from __future__ import annotations

import math

import numpy as np

from vivify.engines.audio.audio_io import FPS
from vivify.engines.motion.generator import CONTROL_NAMES
from vivify.engines.motion.vector import EMOTIONS, INDEX, MOTION_DIM, clip_motion, emotion_offset

MOUTH = ("jaw_open", "lip_stretch", "lip_round", "upper_lip_raise", "lower_lip_depress",
         "lip_press")
# Coarticulation reach (revision 6: was 30 and 40 /s). With the wider reach a short open vowel
# between consonants never reached half of the speech's opening: the targets themselves,
# rendered and scored by the video judge, opened 0.86 of espeak-ng's and 0.89 of festival's
# open vowels on the validation split; with these, 0.96 and 0.93, closures still 1.00.
THETA_ANTICIPATION = 45.0  # 1/s: dominance falls to 1/e 22 ms before a segment
THETA_CARRYOVER = 60.0  # 1/s: and 17 ms after it
EVAL_STEP_S = 1.0 / FPS  # labels are sampled at frame centres
SILENCE_MARGIN_S = 0.1  # "silent" frames are this far from speech: the jaw needs ~100 ms to close

# Lips closed (not pressed) in silence: a portrait whose rest mouth is open (the default avatar
# smiles with parted lips) would otherwise rest open in every pause, where people close their
# lips; on a closed-mouth portrait it only thins the lips a little (the rig's PRESS_THIN).
SILENCE_PRESS = 0.9
# viseme: (jaw, stretch, round, upper_raise, lower_depress, press), dominance α (all dims),
# optional per-dim dominance overrides.
VISEMES: dict[str, tuple[tuple[float, ...], float]] = {
    "SIL": ((0.0, 0.0, 0.0, 0.0, 0.0, SILENCE_PRESS), 0.6),
    "BMP": ((0.0, 0.05, 0.1, 0.0, 0.0, 1.0), 6.0),
    "FV": ((0.08, 0.15, 0.0, 0.6, 0.1, 0.0), 2.5),
    "TH": ((0.2, 0.2, 0.0, 0.2, 0.1, 0.0), 1.0),
    "TDN": ((0.22, 0.15, 0.0, 0.1, 0.05, 0.0), 0.5),
    "SZ": ((0.08, 0.35, 0.0, 0.3, 0.1, 0.0), 1.5),
    "SH": ((0.12, 0.0, 0.5, 0.25, 0.1, 0.0), 1.5),
    "KGH": ((0.3, 0.1, 0.0, 0.0, 0.05, 0.0), 0.35),
    "R": ((0.2, 0.0, 0.35, 0.1, 0.0, 0.0), 1.0),
    "W": ((0.1, 0.0, 0.85, 0.0, 0.0, 0.0), 2.0),
    "J": ((0.15, 0.4, 0.0, 0.0, 0.0, 0.0), 0.8),
    "AA": ((0.75, 0.15, 0.0, 0.1, 0.3, 0.0), 1.0),
    "EH": ((0.6, 0.4, 0.0, 0.05, 0.25, 0.0), 1.0),
    "IY": ((0.25, 0.65, 0.0, 0.0, 0.05, 0.0), 1.0),
    "OH": ((0.55, 0.0, 0.6, 0.0, 0.15, 0.0), 1.0),
    "UW": ((0.25, 0.0, 0.85, 0.0, 0.0, 0.0), 1.2),
    "AH": ((0.6, 0.1, 0.0, 0.0, 0.2, 0.0), 1.0),
    "ER": ((0.5, 0.0, 0.3, 0.0, 0.15, 0.0), 1.0),
    "YY": ((0.3, 0.0, 0.7, 0.0, 0.0, 0.0), 1.0),
}
PRESS_DOMINANCE = 10.0  # bilabials' dominance on lip_press: the closure always wins
VOWEL_VISEMES = ("AA", "EH", "IY", "OH", "UW", "AH", "ER", "YY")

_CONSONANT_PREFIX = [  # longest prefix first
    ("tS", "SH"), ("dZ", "SH"), ("S", "SH"), ("Z", "SH"), ("p", "BMP"), ("b", "BMP"),
    ("m", "BMP"), ("f", "FV"), ("v", "FV"), ("T", "TH"), ("D", "TH"), ("s", "SZ"),
    ("z", "SZ"), ("t", "TDN"), ("d", "TDN"), ("n", "TDN"), ("l", "TDN"), ("L", "TDN"),
    ("4", "TDN"), ("r", "R"), ("R", "R"), ("w", "W"), ("j", "J"), ("J", "J"), ("k", "KGH"),
    ("g", "KGH"), ("N", "KGH"), ("h", "KGH"), ("x", "KGH"), ("X", "KGH"), ("C", "KGH"),
    ("Q", "KGH"), ("?", "KGH"), ("B", "FV"), ("c", "KGH"), ("G", "KGH"),
]
_VOWEL_CHAR = {"a": "AA", "A": "AA", "&": "AA", "e": "EH", "E": "EH", "i": "IY", "I": "IY",
               "o": "OH", "O": "OH", "0": "OH", "u": "UW", "U": "UW", "@": "AH", "V": "AH",
               "3": "ER", "y": "YY", "Y": "YY", "W": "YY"}


def visemes_of(phoneme: str) -> list[str]:
    """Viseme sequence of one espeak phoneme mnemonic (diphthongs give two, e.g. 'aI')."""
    name = phoneme.strip("',%=")
    if not name or name.startswith("_"):
        return ["SIL"]
    for prefix, vis in _CONSONANT_PREFIX:
        if name.startswith(prefix):
            return [vis]
    core = [c for c in name if c in _VOWEL_CHAR]
    if not core:
        return ["AH"]
    out = [_VOWEL_CHAR[core[0]]]
    if len(core) > 1 and _VOWEL_CHAR[core[1]] != out[0]:
        out.append(_VOWEL_CHAR[core[1]])
    return out


def segments(phonemes: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """(start_s, end_s, viseme) segments; diphthongs are split in two halves."""
    out = []
    for start, end, name in phonemes:
        vis = visemes_of(name)
        step = (end - start) / len(vis)
        for k, v in enumerate(vis):
            out.append((start + k * step, start + (k + 1) * step, v))
    return out


def mouth_labels(segs: list[tuple[float, float, str]], n_frames: int) -> np.ndarray:
    """(n_frames, 6) mouth targets at frame centres by dominance-weighted blending."""
    t = (np.arange(n_frames) + 0.5) * EVAL_STEP_S
    num = np.zeros((n_frames, len(MOUTH)))
    den = np.zeros((n_frames, len(MOUTH)))
    # silence before and after the clip and in every gap between segments (inserted pauses)
    all_segs = [(-10.0, segs[0][0] if segs else 0.0, "SIL")]
    for seg in segs:
        if seg[0] > all_segs[-1][1] + 1e-6:
            all_segs.append((all_segs[-1][1], seg[0], "SIL"))
        all_segs.append(seg)
    all_segs.append((segs[-1][1] if segs else 0.0, 1e6, "SIL"))
    for start, end, vis in all_segs:
        target, alpha = VISEMES[vis]
        dist_before = np.clip(start - t, 0.0, None)
        dist_after = np.clip(t - end, 0.0, None)
        decay = np.exp(-THETA_ANTICIPATION * dist_before - THETA_CARRYOVER * dist_after)
        dom = np.full(len(MOUTH), alpha)
        if vis == "BMP":
            dom[MOUTH.index("lip_press")] = PRESS_DOMINANCE
        w = decay[:, None] * dom[None, :]
        num += w * np.asarray(target)[None, :]
        den += w
    return (num / np.maximum(den, 1e-9)).astype(np.float32)


def frame_classes(segs: list[tuple[float, float, str]], n_frames: int) -> np.ndarray:
    """Per frame: 0 speech, 1 silence (no speech phoneme within ±SILENCE_MARGIN_S), 2 bilabial."""
    t = (np.arange(n_frames) + 0.5) * EVAL_STEP_S
    cls = np.ones(n_frames, dtype=np.int8)
    half = 0.5 * EVAL_STEP_S
    for start, end, vis in segs:
        if vis == "SIL":
            continue
        near = (t > start - SILENCE_MARGIN_S) & (t < end + SILENCE_MARGIN_S)
        cls[near & (cls == 1)] = 0
    for start, end, vis in segs:
        if vis == "BMP":
            inside = (t + half > start) & (t - half < end)
            cls[inside] = 2
    return cls


# --- life --------------------------------------------------------------------------------

SWAY_HZ = {"head_yaw": (0.047, 0.113, 0.291), "head_pitch": (0.061, 0.149, 0.377),
           "head_roll": (0.037, 0.097, 0.233), "head_tx": (0.029, 0.083, 0.199),
           "head_scale": (0.023, 0.071, 0.163)}
SWAY_REL = {"head_yaw": 1.0, "head_pitch": 0.7, "head_roll": 0.5, "head_tx": 0.25,
            "head_scale": 0.15}
SWAY_AMPLITUDE = (0.08, 0.2)
BREATH_HZ, BREATH_AMPLITUDE = 0.25, 0.04
NOD_PITCH, NOD_TY, NOD_BROW = 0.15, 0.3, 0.3
NOD_P, BROW_P = 0.7, 0.4
BLINK_RATE_PER_MIN = 14.0
BOUNDARY_BLINK_P = 0.6
BOUNDARY_PAUSE_S = 0.15
BLINK_PROFILE = (0.35, 0.9, 1.0, 0.6, 0.25)  # 200 ms: quick close, slower open
GAZE_HOLD_S = (0.6, 3.0)
GAZE_AMPLITUDE = 0.12


def _bump(t: np.ndarray, onset: float, peak_s: float = 0.12, length_s: float = 0.45
          ) -> np.ndarray:
    """Raised-cosine-ish pulse: rises to 1 at onset + peak_s, back to 0 at onset + length_s."""
    u = t - onset
    rise = np.sin(0.5 * np.pi * np.clip(u / peak_s, 0, 1)) ** 2
    fall = np.cos(0.5 * np.pi * np.clip((u - peak_s) / (length_s - peak_s), 0, 1)) ** 2
    return np.where(u < peak_s, rise, fall) * (u >= 0)


def life_labels(segs: list[tuple[float, float, str]], n_frames: int,
                rng: np.random.Generator) -> np.ndarray:
    """(n_frames, MOTION_DIM) head, blink, gaze and brow labels (mouth dims zero)."""
    t = np.arange(n_frames) / FPS
    out = np.zeros((n_frames, MOTION_DIM), dtype=np.float64)
    amp = rng.uniform(*SWAY_AMPLITUDE)
    for name, freqs in SWAY_HZ.items():
        weights = (0.55, 0.3, 0.15)
        sig = sum(w * np.sin(2 * np.pi * f * rng.uniform(0.85, 1.15) * t
                             + rng.uniform(0, 2 * np.pi)) for w, f in zip(weights, freqs,
                                                                         strict=True))
        out[:, INDEX[name]] += amp * SWAY_REL[name] * sig
    out[:, INDEX["head_ty"]] += BREATH_AMPLITUDE * np.sin(2 * np.pi * BREATH_HZ * t
                                                          + rng.uniform(0, 2 * np.pi))
    # nods on stressed syllables: vowels in the longest third of the clip's vowels
    vowels = [(s, e) for s, e, v in segs if v in VOWEL_VISEMES]
    if vowels:
        cut = np.quantile([e - s for s, e in vowels], 0.67)
        for s, e in vowels:
            if e - s >= cut and rng.uniform() < NOD_P:
                bump = _bump(t, s - 0.03)
                out[:, INDEX["head_pitch"]] += NOD_PITCH * bump
                out[:, INDEX["head_ty"]] += NOD_PITCH * NOD_TY * bump
                if rng.uniform() < BROW_P:
                    out[:, INDEX["brow_raise"]] += NOD_BROW * bump
    # blinks
    starts: list[float] = []
    clock = rng.exponential(60.0 / BLINK_RATE_PER_MIN) * rng.uniform(0.2, 1.0)
    while clock < n_frames / FPS:
        starts.append(clock)
        clock += max(0.4, rng.exponential(60.0 / BLINK_RATE_PER_MIN))
    for s, e, v in segs:
        if v == "SIL" and e - s >= BOUNDARY_PAUSE_S and rng.uniform() < BOUNDARY_BLINK_P:
            starts.append(s + rng.uniform(0.0, 0.1))
    blink = np.zeros(n_frames)
    for s in starts:
        k0 = round(s * FPS)
        for j, level in enumerate(BLINK_PROFILE):
            if 0 <= k0 + j < n_frames:
                blink[k0 + j] = max(blink[k0 + j], level)
    out[:, INDEX["blink_l"]] += blink
    out[:, INDEX["blink_r"]] += blink
    # gaze saccades (a few frames of travel)
    gaze = np.zeros((n_frames, 2))
    k, cur = 0, np.zeros(2)
    while k < n_frames:
        target = np.clip(rng.normal(0, 0.5, 2), -1, 1) * GAZE_AMPLITUDE * np.array([1.0, 0.6])
        hold = max(1, int(rng.uniform(*GAZE_HOLD_S) * FPS))
        for j in range(min(hold, n_frames - k)):
            cur = cur + (target - cur) * (0.6 if j < 3 else 1.0)
            gaze[k + j] = cur
        k += hold
    out[:, INDEX["gaze_x"]] += gaze[:, 0]
    out[:, INDEX["gaze_y"]] += gaze[:, 1]
    return out.astype(np.float32)


CONTROL_DIM = len(CONTROL_NAMES)  # 2 gaze + 1 head distance + 4 emotion intensities


def random_controls(rng: np.random.Generator) -> np.ndarray:
    """Half the clips have neutral controls; the rest a random gaze, distance or emotion."""
    c = np.zeros(CONTROL_DIM, dtype=np.float32)
    if rng.uniform() < 0.5:
        return c
    if rng.uniform() < 0.5:
        c[0:2] = rng.uniform(-0.5, 0.5, 2)
    if rng.uniform() < 0.5:
        c[2] = rng.uniform(-0.5, 0.5)
    if rng.uniform() < 0.5:
        c[3 + int(rng.integers(0, CONTROL_DIM - 3))] = rng.uniform(0.3, 1.0)
    return c


def control_offset(controls: np.ndarray) -> np.ndarray:
    """The motion offset the controls ask for (gaze, head scale, emotion presets)."""
    off = np.zeros(MOTION_DIM, dtype=np.float32)
    off[INDEX["gaze_x"]] += controls[0]
    off[INDEX["gaze_y"]] += controls[1]
    off[INDEX["head_scale"]] += controls[2]
    for k, name in enumerate(e for e in EMOTIONS if e != "neutral"):
        if controls[3 + k] > 0:
            off += emotion_offset(name, float(controls[3 + k]))
    return off


def clip_labels(segs: list[tuple[float, float, str]], n_frames: int, controls: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """All MOTION_DIM labels of one clip."""
    lab = life_labels(segs, n_frames, rng)
    mouth = mouth_labels(segs, n_frames)
    for k, name in enumerate(MOUTH):
        lab[:, INDEX[name]] += mouth[:, k]
    lab += control_offset(controls)[None, :]
    return clip_motion(lab)


def mouth_open_target(vowel: str) -> np.ndarray:
    """The six mouth targets of a held vowel viseme (used for sung vowels)."""
    return np.asarray(VISEMES[vowel][0], dtype=np.float32)


assert math.isclose(EVAL_STEP_S, 0.04)
