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
5. stops and nasals are then snapped to the recording (:func:`refine_closures`): espeak's
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

import functools
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vivify.engines.audio.audio_io import SAMPLE_RATE
from vivify.export.data import labels as lab
from vivify.export.data.festival import LabelledClip  # the one labelled-clip type of every source
from vivify.export.data.klettres_acoustics import (
    band_db,
    closed_frames,
    closure_runs,
    dtw,
    features,
    noise_floor,
    resample,
    spectra,
    speech_region,
)
from vivify.export.data.klettres_align import finish, refine_closures, speech_phones_span, time_map
from vivify.export.data.klettres_espeak import closures_to_stops, matched_rendition, nasal_releases

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



# --- audio ---------------------------------------------------------------------------------


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
        return resample(x.mean(axis=1), rate)



# --- the labelling ---------------------------------------------------------------------------


def align_audio(rec: Recording, audio: np.ndarray) -> Alignment:
    """:func:`align` for any audio of ``rec``'s text (the tests and the tuning use espeak-ng
    renditions with known phone times in place of the person)."""
    duration = audio.size / SAMPLE_RATE
    logmel, level = spectra(audio)
    r0, r1 = speech_region(level, noise_floor(level))
    esp_audio, phones = matched_rendition(rec.spoken, rec.voice, r1 - r0)
    esp_logmel, esp_level = spectra(esp_audio)
    esp_phones = nasal_releases(closures_to_stops(phones, esp_level), esp_logmel)
    e0, e1 = speech_phones_span(esp_phones, speech_region(esp_level))
    e1 = min(e1, esp_level.size)
    a = features(logmel[r0:r1], level[r0:r1])
    b = features(esp_logmel[e0:e1], esp_level[e0:e1])
    dist = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    path = dtw(dist)
    cost = float(dist[path[:, 0], path[:, 1]].mean())
    rec_span, esp_span = (r0 * 0.01, r1 * 0.01), (e0 * 0.01, e1 * 0.01)
    fmap = time_map(path, rec_span, esp_span, duration)
    mapped: list[list[Any]] = [[fmap(s), fmap(e), n] for s, e, n in esp_phones]
    refine_closures(mapped, closure_runs(closed_frames(logmel, (r0, r1)), r0, r1),
                     band_db(logmel, 500.0, 2500.0), rec_span[0])
    segs = lab.segments([(float(s), float(e), str(n)) for s, e, n in mapped])
    clip = LabelledClip(audio=audio, segments=finish(segs, duration),
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

