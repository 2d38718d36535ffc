"""Real human speech for training: KLettres' recordings (Debian ``klettres-data``), labelled.

Why: the generator learned espeak-ng, not speech (issue 13). KLettres ships ~1,800 recordings of
letters, syllables and short words spoken by people (adults and children) in 20 languages, each
with the text it says (``/usr/share/klettres/<lang>/sounds.xml``). They carry no phone times, so
we make them.

How they are labelled, and why this way: **phone times transferred from an espeak-ng rendition
of the same text by DTW, then snapped to the recording's own closures**. A forced aligner needs
an acoustic model per language; pocketsphinx ships English only, and 19 of the 20 languages are
not English. espeak-ng speaks all 20 (Low German through German) and reports its phone times:

1. speech in the recording is found by energy against its room noise (:func:`noise_floor`),
   so ``SIL`` is where the person is silent, not where a DTW path happened to stop;
2. espeak-ng says the same text (a letter alone is read as its name, which is what the
   speakers say; a few texts are corrected, ``_SPOKEN``), at the speaking rate whose speech
   lasts as long as the person's, so DTW only warps locally; a child's or woman's folder gets
   a female variant (formants nearer);
3. espeak's own times are corrected where they are off the sound: a stop's closure silence is
   reported inside the phone before it, a vowel after a nasal 30–60 ms late, and phonemes
   emitted at one sample are put in the order emitted (``Espeak.say`` sorts them by name,
   which gives Dutch "om"'s O to the pause before it);
4. DTW (symmetric steps, a band around the diagonal) on cepstra of the log-mel spectrum,
   normalised per utterance (removes channel and much of the speaker), their deltas and the
   level under the peak maps espeak time → recording time, and the phones go through it;
5. stops and nasals are then snapped to the recording (:func:`_refine_closures`): espeak's
   voiced stops are barely closed where a person's voice bar lasts 100–160 ms, so the DTW alone
   loses them; an utterance-initial stop starts ``INITIAL_CLOSURE_S`` before the onset.

Checked by eye (spectrogram with the boundaries, recording over espeak) on ~30 recordings in
15 languages, and measured on espeak renditions in other variants, rates and noise whose phone
times are known: boundaries inside the word 15–20 ms mean error, 90 % within ~40–60 ms.

Speakers: KLettres names contributors per language, not per file; the folder (language × letters
or syllables) is the best identifier, and the two halves of a language are often different people
(German letters by a high voice, median F0 ~230 Hz; its words by a man, ~120 Hz). ``speaker`` is
``<lang>/<kind>``; ``Recording.high_voice`` (measured median F0 > 180 Hz) picks a female espeak
variant, which brings espeak's formants nearer. Hold a language out with ``language``.

Cost per recording ~25 ms mean on one core (decode, up to three short syntheses, one small
DTW); deterministic.
"""

from __future__ import annotations

import ctypes
import functools
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vivify.engines.audio.audio_io import SAMPLE_RATE
from vivify.engines.motion.generator import MEL_FMAX_HZ, MEL_FMIN_HZ, mel_filterbank
from vivify.export.data import labels as lab
from vivify.export.data.festival import LabelledClip  # the one labelled-clip type of every source

KLETTRES_DIR = Path("/usr/share/klettres")
APT_PACKAGE = "klettres-data"  # Debian/Ubuntu; 40 MB download, 50 MB installed

# KLettres language folder → espeak-ng voice. nds (Low German) has no espeak voice: German is the
# nearest in orthography and phone set (its words are German-like: HUUS, BOOM, WAAG).
VOICES: dict[str, str] = {
    "ar": "ar", "cs": "cs", "da": "da", "de": "de", "en": "en-us", "en_GB": "en-gb-x-rp",
    "es": "es", "fr": "fr", "he": "he", "hu": "hu", "it": "it", "lt": "lt", "ml": "ml", "nb": "nb",
    "nds": "de", "nl": "nl", "pt_BR": "pt-br", "ru": "ru", "tn": "tn", "uk": "uk",
}
# Folders whose speaker has a high voice (median F0 > 180 Hz over the folder, measured with an
# autocorrelation pitch tracker): children and women. The others are men (110–155 Hz).
HIGH_VOICES = frozenset({
    "ar/letters", "cs/letters", "cs/syllables", "de/letters", "en_GB/letters",
    "en_GB/syllables", "es/letters", "es/syllables", "it/letters", "it/syllables",
    "nb/letters", "nl/letters", "nl/syllables", "pt_BR/letters", "pt_BR/syllables",
    "ru/letters", "ru/syllables", "tn/letters", "tn/syllables", "uk/letters", "uk/syllables",
})
HIGH_VARIANT = "+f3"
KINDS = {"alphabet": "letters", "syllables": "syllables"}

# sounds.xml mistakes: a file listed under two texts (the first is right, the file name says so),
# files listed under a missing name, and files the list forgot. Keyed by path under KLETTRES_DIR.
_MOVED = {"tn/syllab/bu.ogg": "tn/syllab/bi.ogg", "ml/syllab/you.ogg": "ml/syllab/yau.ogg"}
_UNLISTED = {"lt/syllab/teis.ogg": ("syllables", "TEIS"), "de/alpha/sz.ogg": ("alphabet", "ß"),
             "ml/syllab/khii.ogg": ("syllables", "ഖീ"), "ml/syllab/zhaha.ogg": ("syllables", "ഴ:")}
_NOT_THAT = {("lt/syllab/ties.ogg", "TEIS"), ("ml/syllab/khi.ogg", "ഖീ"),
             ("ml/syllab/gi.ogg", "ഗൈ"), ("ml/syllab/zhau.ogg", "ഴ:")}
# Texts espeak-ng would read differently from the speaker (checked with ``espeak-ng -x``):
# English "TH"/"CH" are the sounds, not "tee-aitch"; one Russian syllable is typed with a Latin
# O; French "do" and Spanish "xi" come out as English and as a Roman numeral. Hebrew is written
# without vowels, which espeak-ng cannot guess ("גם" → "gm") and its vowel points break it
# (dagesh is spelled out), so the Hebrew words are given as espeak phonemes; the final letter
# forms are said with "sofit" (their recordings are 0.2–0.3 s longer than the plain letter's).
_SPOKEN = {
    ("en", "TH"): "[[T]]", ("en", "CH"): "[[tS]]", ("ru", "КO"): "ко", ("fr", "DO"): "[[d'o]]",
    ("es", "XI"): "[[ks'i]]",
    ("he", "ב"): "[[b'et]]", ("he", "כ"): "[[k'af]]", ("he", "פ"): "[[p'e]]",
    ("he", "ש"): "[[S'in]]", ("he", "ך"): "[[X'af s'ofit]]", ("he", "ם"): "[[m'em s'ofit]]",
    ("he", "ן"): "[[n'un s'ofit]]", ("he", "ף"): "[[f'e s'ofit]]",
    ("he", "ץ"): "[[ts'adi s'ofit]]",
    ("he", "אב"): "[['av]]", ("he", "רק"): "[[Q\"'ak]]", ("he", "גם"): "[[g'am]]",
    ("he", "לא"): "[[l'o]]", ("he", "כן"): "[[k'en]]", ("he", "צח"): "[[ts'aX]]",
    ("he", "לי"): "[[l'i]]", ("he", "הר"): "[[h'aQ\"]]", ("he", "נר"): "[[n'eQ\"]]",
    ("he", "חם"): "[[X'am]]", ("he", "קו"): "[[k'av]]", ("he", "בו"): "[[b'o]]",
    ("he", "בי"): "[[b'i]]", ("he", "כי"): "[[k'i]]", ("he", "די"): "[[d'aj]]",
    ("he", "סל"): "[[s'al]]", ("he", "יש"): "[[j'eS]]", ("he", "עד"): "[['ad]]",
    ("he", "גר"): "[[g'aQ\"]]", ("he", "דג"): "[[d'ag]]", ("he", "ים"): "[[j'am]]",
    ("he", "מי"): "[[m'i]]", ("he", "אף"): "[['af]]", ("he", "קש"): "[[k'aS]]",
}
# Low German through the German voice: its doubled vowels are long vowels, which German spells
# with an h ("BOOM" → "bohm"; the German voice reads "boom" as English).
_NDS_LONG = (("ää", "äh"), ("öö", "öh"), ("üü", "üh"), ("uu", "uh"), ("oo", "oh"))

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
# --- the rendition and the DTW ------------------------------------------------------------------
RATE_WPM = 160
RATE_RANGE = (80, 450)  # espeak-ng's rate limits
BAND = 0.3  # DTW band half-width, as a fraction of the longer sequence (plus BAND_MIN frames)
BAND_MIN = 8
CLOSURE_BELOW_PEAK_DB = 30.0  # espeak's stop closures: quieter than this under its peak
MAX_CLOSURE_S = 0.15
RELEASE_RISE_DB = 5.0  # a murmur's release (or onset): the mid band moves this much in 20 ms
# --- closures in the recording (_refine_closures) ------------------------------------------------
CLOSED_BELOW_DB = 25.0  # a closure: the mid band this far under its speech maximum
FRICATIVE_MARGIN_DB = 25.0  # and the high band not this far above the mid band (/s/)
MIN_CLOSURE_S = 0.02
SNAP_S = 0.08  # a closure run this close to the DTW's guess is the consonant's
BURST_S = 0.015  # a stop's release, after its closure
INITIAL_CLOSURE_S = 0.06  # an utterance-initial stop's silent closure before the onset
MIN_PHONE_S = 0.01
_STOPS = ("p", "b", "t", "d", "k", "g", "c", "q", "ts", "tS", "dZ")  # espeak mnemonics
_NASALS = ("m", "n", "N")


@dataclass(frozen=True)
class Recording:
    """One KLettres recording: where it is and what is said, by which folder's speaker."""

    path: Path
    language: str  # KLettres folder name: "de", "en_GB", "pt_BR", ...
    kind: str  # "letters" (the letter's name) or "syllables" (syllables and short words)
    text: str  # as KLettres shows it ("B", "BA", "OPA", "ഖീ")

    @property
    def speaker(self) -> str:
        """``<lang>/<kind>``: KLettres' speakers are per folder, not per file."""
        return f"{self.language}/{self.kind}"

    @property
    def high_voice(self) -> bool:
        """A child's or woman's voice (folder median F0 > 180 Hz)."""
        return self.speaker in HIGH_VOICES

    @property
    def voice(self) -> str:
        """The espeak-ng voice (and variant) that renders this recording's text."""
        return VOICES[self.language] + (HIGH_VARIANT if self.high_voice else "")

    @property
    def spoken(self) -> str:
        """The text espeak-ng is given: lowercase (so "BA" is a syllable, not two letters; a
        single letter is read as its name, which is what the speakers say), or a correction."""
        if (self.language, self.text) in _SPOKEN:
            return _SPOKEN[self.language, self.text]
        text = self.text.lower()
        if self.language == "nds" and self.kind == "syllables":
            for double, german in _NDS_LONG:
                text = text.replace(double, german)
        return text


@dataclass(frozen=True)
class Alignment:
    """Everything :func:`label` computes, for checks and plots.

    ``path`` is the DTW path as (recording frame, espeak frame) pairs inside the two speech
    regions (10 ms frames from each region's start); ``cost`` its mean frame distance (a match
    quality: lower is better; compare within a language)."""

    clip: LabelledClip
    espeak_audio: np.ndarray  # 16 kHz
    espeak_segments: list[tuple[float, float, str]]
    speech: tuple[float, float]  # recording's speech region (s)
    espeak_speech: tuple[float, float]
    path: np.ndarray  # (K, 2) int
    cost: float


def available(root: Path = KLETTRES_DIR) -> bool:
    """Whether ``klettres-data`` is installed (``apt-get install klettres-data``)."""
    return any(root.glob("*/sounds.xml"))


@functools.cache
def _catalogue(root: Path) -> tuple[Recording, ...]:
    recs: dict[str, Recording] = {}
    for xml in sorted(root.glob("*/sounds.xml")):
        lang = xml.parent.name
        if lang not in VOICES:
            continue
        for section in ET.parse(xml).getroot().iter():
            kind = KINDS.get(section.tag)
            if kind is None:
                continue
            for sound in section.iter("sound"):
                rel, text = sound.get("file", ""), sound.get("name", "").strip()
                rel = _MOVED.get(rel, rel)
                if (rel, text) in _NOT_THAT or rel in recs or not text:
                    continue
                if (root / rel).is_file():
                    recs[rel] = Recording(root / rel, lang, kind, text)
        for rel, (section_tag, text) in _UNLISTED.items():
            if rel.startswith(f"{lang}/") and (root / rel).is_file() and rel not in recs:
                recs[rel] = Recording(root / rel, lang, KINDS[section_tag], text)
    return tuple(sorted(recs.values(), key=lambda r: (r.language, r.kind, str(r.path))))


def recordings(root: Path = KLETTRES_DIR) -> list[Recording]:
    """Every recording with a known text, sorted (language, kind, path); [] if not installed.

    Recordings whose file is missing (Indonesian, Nynorsk: listed, not shipped) or whose text is
    unknown (one Hebrew file the list forgot) are left out."""
    return list(_catalogue(Path(root)))


def languages(root: Path = KLETTRES_DIR) -> list[str]:
    """The KLettres languages with recordings (folder names), sorted."""
    return sorted({r.language for r in recordings(root)})


# --- audio and features ---------------------------------------------------------------------


def load(path: Path) -> np.ndarray:
    """16 kHz mono float32. Through ``load_audio`` (ffmpeg); 18 Czech files (Vorbis written by
    libVorbis 1.0) make ffmpeg's demuxer give up, and libsndfile reads them."""
    import av

    from vivify.engines.audio.audio_io import AudioDecodeError, load_audio

    try:
        return load_audio(path)
    except (AudioDecodeError, av.error.FFmpegError) as first:
        try:
            import soundfile
        except ImportError:
            raise first from None
        x, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        return _resample(x.mean(axis=1), rate)


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
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


def _features(logmel: np.ndarray, level: np.ndarray) -> np.ndarray:
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


# --- espeak side ----------------------------------------------------------------------------

ESPEAK_PHONEMES = 0x100  # espeak_Synth flag: "[[...]]" in the text is phoneme mnemonics
ESPEAK_RAND_SEED = 1
FINAL_L_SHARE = 0.35
_PRIVATE_LIB: Path | None = None


def _private_lib() -> Path:
    """A private copy of libespeak-ng, so that each synthesis can load it fresh.

    Why: libespeak-ng carries state from one utterance to the next (its pitch flutter index,
    not reset by ``srand``): "opa" synthesised twice differs by a few samples and in every
    sample, and through the rate choice and the DTW a label moved by 20 ms. A fresh instance
    (dlopen, initialise, synthesise, terminate, dlclose: ~7 ms) with libc's ``rand`` seeded
    (its noise sources use it) makes every rendition, hence every label, a function of the
    recording alone. A private file, not the shared library
    itself: dlopen of a loaded library returns the same instance, and terminating it would
    pull the synthesiser out from under ``synth.Espeak`` in the same process."""
    global _PRIVATE_LIB
    if _PRIVATE_LIB is None or not _PRIVATE_LIB.is_file():
        import ctypes.util
        import shutil
        import tempfile

        from vivify.export.data.synth import ESPEAK_LIB

        handle = ctypes.CDLL(ESPEAK_LIB)  # resolve the installed file through the loader
        src = _loaded_path(handle) or ctypes.util.find_library("espeak-ng")
        if src is None:
            raise OSError(f"cannot find {ESPEAK_LIB}")
        import atexit

        folder = Path(tempfile.mkdtemp(prefix="vivify-klettres-"))
        atexit.register(shutil.rmtree, folder, True)
        _PRIVATE_LIB = folder / "libespeak-ng-private.so"
        shutil.copyfile(src, _PRIVATE_LIB)
    return _PRIVATE_LIB


def _loaded_path(handle: ctypes.CDLL) -> str | None:
    """The file a loaded library came from (glibc's dlinfo via /proc/self/maps)."""
    name = Path(handle._name).name
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if path.startswith("/") and Path(path).name.startswith(name.split(".so")[0]):
                return path
    return None


def _synthesise(text: str, voice: str, rate_wpm: int
                ) -> tuple[np.ndarray, int, list[tuple[int, str]]]:
    """(audio, sample rate, phoneme events in emission order) from a fresh libespeak-ng, with
    "[[...]]" phoneme input (the Hebrew words, English "th"). Events are kept in the order
    espeak emits them: ``Espeak.say`` sorts them by (sample, name)."""
    import _ctypes

    from vivify.export.data.synth import (
        _CALLBACK,
        AUDIO_OUTPUT_SYNCHRONOUS,
        EVENT_LIST_TERMINATED,
        EVENT_PHONEME,
        INIT_PHONEME_EVENTS,
        PARAM_PITCH,
        PARAM_RANGE,
        PARAM_RATE,
        PCM16_SCALE,
        POS_CHARACTER,
    )

    chunks: list[np.ndarray] = []
    events: list[tuple[int, str]] = []

    def on_audio(wav: ctypes._Pointer, n: int, evs: ctypes._Pointer) -> int:
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while evs[i].type != EVENT_LIST_TERMINATED:
            if evs[i].type == EVENT_PHONEME:
                events.append((int(evs[i].sample), evs[i].id.string.decode("ascii", "replace")))
            i += 1
        return 0

    callback = _CALLBACK(on_audio)
    lib = ctypes.CDLL(str(_private_lib()), mode=ctypes.RTLD_LOCAL)
    ctypes.CDLL(None).srand(ESPEAK_RAND_SEED)  # its noise sources draw on libc's rand()
    try:
        rate = int(lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None, INIT_PHONEME_EVENTS))
        if rate <= 0:
            raise RuntimeError("espeak_Initialize failed")
        lib.espeak_SetSynthCallback(callback)
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"unknown espeak-ng voice {voice!r}")
        lib.espeak_SetParameter(PARAM_RATE, rate_wpm, 0)
        lib.espeak_SetParameter(PARAM_PITCH, 50, 0)
        lib.espeak_SetParameter(PARAM_RANGE, 50, 0)
        data = text.encode("utf-8")
        lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, ESPEAK_PHONEMES, None, None)
        lib.espeak_Synchronize()
        lib.espeak_Terminate()
    finally:
        handle = lib._handle
        del lib
        _ctypes.dlclose(handle)
    audio = (np.concatenate(chunks).astype(np.float32) / PCM16_SCALE
             if chunks else np.zeros(0, np.float32))
    return audio, rate, events


def _clean_phonemes(phonemes: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Language-switch markers ("(en)", "(ml)") are events with a duration but no sound of
    their own: they become pauses, never a vowel (``visemes_of`` would read "(en)" as EH)."""
    return [(s, e, "_" if name.startswith("(") else name) for s, e, name in phonemes]


def _closures_to_stops(phones: list[tuple[float, float, str]], level: np.ndarray
                       ) -> list[tuple[float, float, str]]:
    """espeak-ng emits a stop's phoneme event at its burst: the closure's silence is counted in
    the phone before ("opa": o: 29–245 ms, silence 205–245 ms, p 245–280 ms). Lips are shut
    during that silence, so it is moved to the stop: the stop starts where the quiet run before
    its burst starts (at most ``MAX_CLOSURE_S``, never before the previous phone's start)."""
    quiet = level < float(level.max()) - CLOSURE_BELOW_PEAK_DB
    out: list[list[Any]] = [list(p) for p in phones]
    for k in range(1, len(out)):
        start, _end, name = out[k]
        prev = out[k - 1]
        bare = name.strip("',%=")
        if not bare.startswith(_STOPS) or prev[2].startswith("_"):
            continue
        frame = min(int(start * 100), quiet.size) - 1  # the 10 ms frame before the event
        first = frame
        while first >= 0 and quiet[first] and (frame - first) < MAX_CLOSURE_S * 100:
            first -= 1
        new = max(prev[0] + 0.01, (first + 1) * 0.01)
        if frame >= 0 and quiet[frame] and new < start:
            prev[1] = out[k][0] = new
    return [(float(s), float(e), str(n)) for s, e, n in out]


def _band_db(logmel: np.ndarray, lo_hz: float, hi_hz: float) -> np.ndarray:
    power = np.power(10.0, logmel[:, (lo_hz <= _MEL_HZ) & (hi_hz > _MEL_HZ)] / 10.0)
    return 10.0 * np.log10(power.mean(axis=1) + 1e-12)


def _nasal_releases(phones: list[tuple[float, float, str]], logmel: np.ndarray
                    ) -> list[tuple[float, float, str]]:
    """espeak-ng reports the vowel after a nasal 30–60 ms after its formants start (Ukrainian
    "мі": the i event at 157 ms of 175, its mid band up at 110 ms; Spanish "mi" 30 ms late),
    so its nasals run into the vowel. The boundary is moved to the murmur's release: the
    steepest 20 ms rise of the mid band (≥ ``RELEASE_RISE_DB``) inside the nasal."""
    mid = _band_db(logmel, 500.0, 2500.0)
    out: list[list[Any]] = [list(p) for p in phones]
    for k in range(len(out) - 1):
        start, end, name = out[k]
        if not _bare(name).startswith(_NASALS) or out[k + 1][2].startswith("_"):
            continue
        lo, hi = int(start * 100) + 2, min(int(end * 100), mid.size - 2)
        if hi <= lo:
            continue
        rise = mid[lo + 2:hi + 2] - mid[lo:hi]
        j = int(np.argmax(rise))
        if rise[j] >= RELEASE_RISE_DB:
            t = (lo + j + 1.5) * 0.01  # between the two frames of the rise
            if start + MIN_PHONE_S < t < end:
                out[k][1] = out[k + 1][0] = t
    return [(float(a), float(b), str(n)) for a, b, n in out]


def _stable_phonemes(events: list[tuple[int, str]], n: int, rate: int
                     ) -> list[tuple[float, float, str]]:
    """Phonemes from espeak's events in emission order. ``Espeak.say`` sorts (sample, name)
    tuples, so two events at one sample are ordered by name: Dutch "om" emits ("_|", 0),
    ("O", 0) and the sort puts "O" first, giving it zero length and its 168 ms to the pause —
    an initial uppercase-mnemonic vowel (O, I, E, V, ...) after "_|" becomes silence.

    One more quirk: English final "l" ("well", "ball", the letter L) is emitted at the same
    sample as the pause after it, its sound inside the vowel's span; it gets the last
    ``FINAL_L_SHARE`` of the phone before it."""
    ordered = sorted(events, key=lambda ev: ev[0])  # stable: ties keep emission order
    out: list[tuple[float, float, str]] = []
    for k, (sample, name) in enumerate(ordered):
        end = ordered[k + 1][0] if k + 1 < len(ordered) else n
        if min(end, n) > sample:
            out.append((sample / rate, min(end, n) / rate, name))
        elif (end == sample and out and not name.startswith(("_", "("))
              and k + 1 < len(ordered) and ordered[k + 1][1].startswith("_")):
            s0, e0, prev = out[-1]
            cut = e0 - min(FINAL_L_SHARE * (e0 - s0), 0.1)
            out[-1] = (s0, cut, prev)
            out.append((cut, e0, name))
    if out and out[-1][1] < n / rate:
        out.append((out[-1][1], n / rate, "_"))
    return out


def _render(rec: Recording, rate_wpm: int) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    audio, rate, events = _synthesise(rec.spoken, rec.voice, rate_wpm)
    phones = _stable_phonemes(events, audio.size, rate)
    return _resample(audio, rate), _clean_phonemes(phones)


def _matched_rendition(rec: Recording, target_frames: int
                       ) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """espeak-ng at the rate whose speech lasts closest to the person's (two refinements: rate
    and duration are not proportional, pauses and stops do not stretch)."""
    rate = RATE_WPM
    best: tuple[int, np.ndarray, list[tuple[float, float, str]]] | None = None
    for _ in range(3):
        audio, phones = _render(rec, rate)
        s, e = speech_region(spectra(audio)[1])
        miss = abs((e - s) - target_frames)
        if best is None or miss < best[0]:
            best = (miss, audio, phones)
        if miss <= 2 or e <= s:
            break
        new = int(np.clip(round(rate * (e - s) / target_frames), *RATE_RANGE))
        if new == rate:
            break
        rate = new
    assert best is not None
    return best[1], best[2]


# --- the labelling ---------------------------------------------------------------------------


def _time_map(path: np.ndarray, rec_span: tuple[float, float], esp_span: tuple[float, float],
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


def closed_frames(logmel: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    """Frames where a stop has the mouth shut, from band levels relative to their maxima in
    the utterance (``span``): the mid band (500–2500 Hz) ``CLOSED_BELOW_DB`` under its maximum,
    and the high band (> 2500 Hz) not standing out above it by ``FRICATIVE_MARGIN_DB`` (that
    would be /s/ or /ʃ/). That is a stop's silence and a voiced stop's voice bar (only < 500 Hz
    passes closed lips: Czech and Italian "ba" have 100–160 ms of it, 35–60 dB down in the
    mid band); an /u/ (F2 ~ 800 Hz) stays within ~24 dB."""
    s0, s1 = span
    mid = _band_db(logmel, 500.0, 2500.0)
    high = _band_db(logmel, 2500.0, 1e9)
    mid, high = mid - float(mid[s0:s1].max()), high - float(high[s0:s1].max())
    return (mid < -CLOSED_BELOW_DB) & (high < mid + FRICATIVE_MARGIN_DB)


def _runs(mask: np.ndarray, lo: int, hi: int) -> list[tuple[float, float]]:
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


def _bare(name: str) -> str:
    return name.strip("',%=")


def _is_vowel(name: str) -> bool:
    return lab.visemes_of(name)[0] in lab.VOWEL_VISEMES


def _steepest(mid: np.ndarray, t0: float, t1: float, sign: float) -> float | None:
    """Time of the steepest 20 ms rise (``sign`` 1) or fall (−1) of ``mid`` between t0 and
    t1, if it is at least ``RELEASE_RISE_DB``."""
    lo, hi = max(0, round(t0 * 100)), min(mid.size - 2, round(t1 * 100))
    if hi <= lo:
        return None
    step = sign * (mid[lo + 2:hi + 2] - mid[lo:hi])
    j = int(np.argmax(step))
    return (lo + j + 1.5) * 0.01 if step[j] >= RELEASE_RISE_DB else None


def _refine_closures(phones: list[list[Any]], runs: list[tuple[float, float]], mid: np.ndarray,
                     onset: float) -> None:
    """Snap every stop and nasal to the recording's own acoustics (in place).

    DTW from espeak-ng cannot place these well: espeak's voiced stops are barely closed (its
    "b" dips 8 dB where a person's voice bar is 40 dB down), its nasal murmurs sound little
    like a person's, and a person's closures last two to four times longer, so the path
    collapses or shifts them. The recording shows them plainly:

    - a stop becomes the closure run (:func:`closed_frames`) overlapping the DTW's guess
      (± ``SNAP_S``) — grown to it, never shrunk — plus ``BURST_S`` of release. An
      utterance-initial stop's closure is silent: it starts ``INITIAL_CLOSURE_S`` before the
      person's onset (lips shut before the burst or the voice bar); a voiceless one with no
      closure to see ends ``2 · BURST_S`` after the onset (aspiration is open-lipped);
    - a nasal after a vowel starts at the steepest fall of the mid band (500–2500 Hz) inside
      that vowel (DTW may be 200 ms off: Dutch "om"), and before a vowel it ends at the
      steepest rise into it (the murmur's edges are the clearest landmarks in speech; its
      inside may not look closed at all: English "me")."""
    first = next((k for k, ph in enumerate(phones) if not ph[2].startswith("_")), None)
    for k, (s, e, name) in enumerate(phones):
        bare = _bare(name)
        stop = bare.startswith(_STOPS)
        nasal = bare.startswith(_NASALS)
        if not (stop or nasal):
            continue
        lo = phones[k - 1][0] + MIN_PHONE_S if k > 0 else 0.0
        hi = phones[k + 1][1] - MIN_PHONE_S if k + 1 < len(phones) else e
        if k > 0 and phones[k - 1][2].startswith("_"):
            lo = 0.0 if k == 1 else phones[k - 2][1]  # silence before may shrink to nothing
        if nasal:
            new_s, new_e = s, e
            if k > 0 and _is_vowel(phones[k - 1][2]):
                t = _steepest(mid, phones[k - 1][0] + 0.03, min(s + SNAP_S, e - MIN_PHONE_S),
                              -1.0)
                new_s = s if t is None else t
            if k + 1 < len(phones) and _is_vowel(phones[k + 1][2]):
                t = _steepest(mid, max(new_s, s) + 0.02, phones[k + 1][1] - 0.03, 1.0)
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


def _finish(segs: list[tuple[float, float, str]], duration: float
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


def _speech_phones_span(phones: list[tuple[float, float, str]], fallback: tuple[int, int]
                        ) -> tuple[int, int]:
    """espeak's speech in frames: from its first sounding phone's start to its last one's end.
    Its own phone times say where speech is better than its energy: the 10–25 ms pause
    ("_:") it ends on is above any energy threshold, and a person's vowel decays longer."""
    sounding = [(s, e) for s, e, n in phones if not n.startswith("_")]
    if not sounding:
        return fallback
    lo, hi = round(sounding[0][0] * 100), round(sounding[-1][1] * 100)
    return (lo, hi) if hi - lo >= 2 else fallback


def align_audio(rec: Recording, audio: np.ndarray) -> Alignment:
    """:func:`align` for any audio of ``rec``'s text (the tests and the tuning use espeak-ng
    renditions with known phone times in place of the person)."""
    duration = audio.size / SAMPLE_RATE
    logmel, level = spectra(audio)
    r0, r1 = speech_region(level, noise_floor(level))
    esp_audio, phones = _matched_rendition(rec, r1 - r0)
    esp_logmel, esp_level = spectra(esp_audio)
    esp_phones = _nasal_releases(_closures_to_stops(phones, esp_level), esp_logmel)
    e0, e1 = _speech_phones_span(esp_phones, speech_region(esp_level))
    e1 = min(e1, esp_level.size)
    a = _features(logmel[r0:r1], level[r0:r1])
    b = _features(esp_logmel[e0:e1], esp_level[e0:e1])
    dist = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    path = dtw(dist)
    cost = float(dist[path[:, 0], path[:, 1]].mean())
    rec_span, esp_span = (r0 * 0.01, r1 * 0.01), (e0 * 0.01, e1 * 0.01)
    fmap = _time_map(path, rec_span, esp_span, duration)
    mapped: list[list[Any]] = [[fmap(s), fmap(e), n] for s, e, n in esp_phones]
    _refine_closures(mapped, _runs(closed_frames(logmel, (r0, r1)), r0, r1),
                     _band_db(logmel, 500.0, 2500.0), rec_span[0])
    segs = lab.segments([(float(s), float(e), str(n)) for s, e, n in mapped])
    clip = LabelledClip(audio=audio, segments=_finish(segs, duration),
                        source=f"klettres:{rec.language}", speaker=rec.speaker, text=rec.text)
    return Alignment(clip=clip, espeak_audio=esp_audio,
                     espeak_segments=lab.segments(esp_phones), speech=rec_span,
                     espeak_speech=esp_span, path=path, cost=cost)


def align(rec: Recording) -> Alignment:
    """Label one recording and keep the intermediate results (see the module docstring)."""
    return align_audio(rec, load(rec.path))


def label(rec: Recording) -> LabelledClip:
    """The recording's audio with viseme segments covering it, ``SIL`` where the person is
    silent. Deterministic (no randomness; espeak-ng and the DTW are pure functions)."""
    return align(rec).clip
