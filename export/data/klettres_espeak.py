"""espeak-ng's rendition of a KLettres text, with its phone times corrected where they are off
the sound (steps 2 and 3 of :mod:`vivify.export.data.klettres`).

espeak-ng is driven through its C library (``export/data/synth.py``'s bindings) because the
labelling needs its phoneme events, and a private copy of the library (:func:`_private_lib`)
makes every rendition a function of the text alone.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np

from vivify.export.data.klettres_acoustics import (
    band_db,
    resample,
    spectra,
    speech_region,
    steepest_step,
)

RATE_WPM = 160
RATE_RANGE = (80, 450)  # espeak-ng's rate limits
CLOSURE_BELOW_PEAK_DB = 30.0  # espeak's stop closures: quieter than this under its peak
MAX_CLOSURE_S = 0.15
MIN_PHONE_S = 0.01
STOPS = ("p", "b", "t", "d", "k", "g", "c", "q", "ts", "tS", "dZ")  # espeak mnemonics
NASALS = ("m", "n", "N")
ESPEAK_PHONEMES = 0x100  # espeak_Synth flag: "[[...]]" in the text is phoneme mnemonics
ESPEAK_RAND_SEED = 1
FINAL_L_SHARE = 0.35
_PRIVATE_LIB: Path | None = None


def bare_phoneme(name: str) -> str:
    """An espeak-ng mnemonic without its stress and length marks (``'``, ``,``, ``%``, ``=``)."""
    return name.strip("',%=")


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


def synthesise(text: str, voice: str, rate_wpm: int
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


def clean_phonemes(phonemes: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Language-switch markers ("(en)", "(ml)") are events with a duration but no sound of
    their own: they become pauses, never a vowel (``visemes_of`` would read "(en)" as EH)."""
    return [(s, e, "_" if name.startswith("(") else name) for s, e, name in phonemes]


def closures_to_stops(phones: list[tuple[float, float, str]], level: np.ndarray
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
        if not bare_phoneme(name).startswith(STOPS) or prev[2].startswith("_"):
            continue
        frame = min(int(start * 100), quiet.size) - 1  # the 10 ms frame before the event
        first = frame
        while first >= 0 and quiet[first] and (frame - first) < MAX_CLOSURE_S * 100:
            first -= 1
        new = max(prev[0] + 0.01, (first + 1) * 0.01)
        if frame >= 0 and quiet[frame] and new < start:
            prev[1] = out[k][0] = new
    return [(float(s), float(e), str(n)) for s, e, n in out]


def nasal_releases(phones: list[tuple[float, float, str]], logmel: np.ndarray
                    ) -> list[tuple[float, float, str]]:
    """espeak-ng reports the vowel after a nasal 30–60 ms after its formants start (Ukrainian
    "мі": the i event at 157 ms of 175, its mid band up at 110 ms; Spanish "mi" 30 ms late),
    so its nasals run into the vowel. The boundary is moved to the murmur's release: the
    steepest 20 ms rise of the mid band (≥ ``RELEASE_RISE_DB``) inside the nasal."""
    mid = band_db(logmel, 500.0, 2500.0)
    out: list[list[Any]] = [list(p) for p in phones]
    for k in range(len(out) - 1):
        start, end, name = out[k]
        if not bare_phoneme(name).startswith(NASALS) or out[k + 1][2].startswith("_"):
            continue
        t = steepest_step(mid, int(start * 100) + 2, min(int(end * 100), mid.size - 2), 1.0)
        if t is not None and start + MIN_PHONE_S < t < end:
            out[k][1] = out[k + 1][0] = t
    return [(float(a), float(b), str(n)) for a, b, n in out]


def stable_phonemes(events: list[tuple[int, str]], n: int, rate: int
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


def render(text: str, voice: str, rate_wpm: int
           ) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """16 kHz audio and its cleaned phonemes in emission order."""
    audio, rate, events = synthesise(text, voice, rate_wpm)
    phones = stable_phonemes(events, audio.size, rate)
    return resample(audio, rate), clean_phonemes(phones)


def matched_rendition(text: str, voice: str, target_frames: int
                      ) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """espeak-ng at the rate whose speech lasts closest to the person's (two refinements: rate
    and duration are not proportional, pauses and stops do not stretch)."""
    rate = RATE_WPM
    best: tuple[int, np.ndarray, list[tuple[float, float, str]]] | None = None
    for _ in range(3):
        audio, phones = render(text, voice, rate)
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

