"""espeak-ng through libespeak-ng (ctypes): audio plus the exact start of every phoneme.

Why the library and not the command line: ``espeak-ng --pho`` only works with mbrola voices;
the library's phoneme events (``espeakINITIALIZE_PHONEME_EVENTS``) give each phoneme's start
sample for every voice, in the same pass that makes the audio, so timings are exact by
construction. One synthesiser per process (the library keeps global state).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

ESPEAK_LIB = "libespeak-ng.so.1"
AUDIO_OUTPUT_SYNCHRONOUS = 2
INIT_PHONEME_EVENTS = 0x0001
EVENT_LIST_TERMINATED = 0
EVENT_PHONEME = 7
POS_CHARACTER = 1
PARAM_RATE, PARAM_PITCH, PARAM_RANGE = 1, 3, 4
PCM16_SCALE = 32768.0


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Utterance:
    """Synthesised speech: float32 audio at ``rate`` and phonemes as (start_s, end_s, name)."""

    audio: np.ndarray
    rate: int
    phonemes: list[tuple[float, float, str]]


class Espeak:
    """One libespeak-ng instance. ``say(text, voice, rate_wpm, pitch)`` → :class:`Utterance`."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(ESPEAK_LIB)
        self.rate = int(self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                                   INIT_PHONEME_EVENTS))
        if self.rate <= 0:
            raise RuntimeError("espeak_Initialize failed")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._cb = _CALLBACK(self._on_audio)  # keep a reference: ctypes must not free it
        self.lib.espeak_SetSynthCallback(self._cb)

    def _on_audio(self, wav: ctypes._Pointer, n: int, events: ctypes._Pointer) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == EVENT_PHONEME:
                self._events.append((int(ev.sample), ev.id.string.decode("ascii", "replace")))
            i += 1
        return 0

    def say(self, text: str, voice: str, rate_wpm: int = 160, pitch: int = 50,
            pitch_range: int = 50) -> Utterance:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"unknown espeak-ng voice {voice!r}")
        self.lib.espeak_SetParameter(PARAM_RATE, rate_wpm, 0)
        self.lib.espeak_SetParameter(PARAM_PITCH, pitch, 0)
        self.lib.espeak_SetParameter(PARAM_RANGE, pitch_range, 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8")
        self.lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        audio = (np.concatenate(self._chunks).astype(np.float32) / PCM16_SCALE
                 if self._chunks else np.zeros(0, np.float32))
        duration = audio.size / self.rate
        phonemes = []
        events = sorted(self._events)
        for k, (sample, name) in enumerate(events):
            end = events[k + 1][0] if k + 1 < len(events) else audio.size
            if end > sample:
                phonemes.append((sample / self.rate, min(end, audio.size) / self.rate, name))
        if phonemes and phonemes[-1][1] < duration:
            phonemes.append((phonemes[-1][1], duration, "_"))
        return Utterance(audio=audio, rate=self.rate, phonemes=phonemes)
