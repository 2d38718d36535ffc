"""festival as a training-audio source: held-out voices refused, segment times that fit the audio.

The synthesis tests skip (with the reason) where festival is not installed; the held-out
checks never need it, so they run everywhere.
"""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pytest

from vivify.export.data import festival as fest
from vivify.export.data.labels import VISEMES, VOWEL_VISEMES

HAVE_FESTIVAL = shutil.which("festival") is not None
needs_festival = pytest.mark.skipif(
    not HAVE_FESTIVAL, reason="festival is not installed (apt-get install --no-install-recommends "
                              "festival festvox-kdlpc16k ...; "
                               "see vivify.export.data.festival.PACKAGES)")
HELD_OUT_NAMES = ("kal_diphone", "cmu_us_slt_arctic_hts", "festvox-kallpc16k",
                  "festvox-kallpc8k", "festvox-us-slt-hts", "cmu_us_awb_arctic_clunits", "flite")


@pytest.fixture(scope="module")
def festival() -> fest.Festival:
    return fest.Festival()


def _frame_rms(audio: np.ndarray, start: float, end: float) -> float:
    seg = audio[int(start * fest.RATE):int(end * fest.RATE)].astype(np.float64)
    return float(np.sqrt(np.mean(seg**2))) if seg.size else 0.0


def _check_segments(clip: fest.LabelledClip) -> None:
    segs = clip.segments
    assert segs[0][0] == 0.0
    assert segs[-1][1] == pytest.approx(clip.audio.size / fest.RATE, abs=1e-6)
    for (_, end, _), (start, _, _) in itertools.pairwise(segs):
        assert start == pytest.approx(end, abs=1e-9)  # contiguous
    assert all(e > s for s, e, _ in segs)
    assert all(v in VISEMES for _, _, v in segs)
    assert segs[0][2] == "SIL" and segs[-1][2] == "SIL"


def test_held_out_voices_are_refused_by_name() -> None:
    for name in HELD_OUT_NAMES:
        assert fest.is_held_out(name), name
    assert not any(fest.is_held_out(v) for v in fest.VOICES)
    assert not any(fest.is_held_out(p) for p in fest.PACKAGES)
    assert not set(HELD_OUT_NAMES) & set(fest.available_voices())
    speaker = object.__new__(fest.Festival)  # the refusal comes before any subprocess
    for name in ("kal_diphone", "cmu_us_slt_arctic_hts"):
        with pytest.raises(fest.HeldOutVoiceError, match="held out"):
            speaker.say("hello", name)


def test_crashed_process_is_restarted_after_the_last_finished_utterance(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[int]] = []

    def fake_run(self: fest.Festival, spec: fest.Voice, items: list[tuple[int, str, float]]
                 ) -> dict[int, fest.LabelledClip]:
        calls.append([i for i, _, _ in items])
        crash_at = 2 if len(calls) == 1 else None  # first process dies on utterance 2
        return {i: fest.LabelledClip(np.zeros(160, np.float32), [(0.0, 0.01, "SIL")],
                                     "festival:x", spec.name, t)
                for i, t, _ in items if crash_at is None or i < crash_at}

    monkeypatch.setattr(fest.Festival, "_run", fake_run)
    speaker = object.__new__(fest.Festival)
    clips = speaker.say_many(["a", "b", "c", "d"], "ked_diphone")
    assert [c.text for c in clips] == ["a", "b", "c", "d"]
    assert calls == [[0, 1, 2, 3], [2, 3]]


@needs_festival
def test_english_segments_fit_the_audio(festival: fest.Festival) -> None:
    assert "ked_diphone" in fest.available_voices()
    clip = festival.say("Bob bought a purple map, maybe.", "ked_diphone")
    assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1
    assert clip.source == "festival:ked_diphone" and clip.speaker == "ked_diphone"
    _check_segments(clip)
    visemes = [v for _, _, v in clip.segments]
    assert visemes.count("BMP") >= 6  # b, b, p, p, m, m, b
    # vowels are where the sound is: louder than the leading silence, on every vowel
    lead = _frame_rms(clip.audio, *clip.segments[0][:2])
    vowel_rms = [_frame_rms(clip.audio, s, e) for s, e, v in clip.segments if v in VOWEL_VISEMES]
    assert len(vowel_rms) >= 8
    assert min(vowel_rms) > 0.02 and min(vowel_rms) > 20 * lead
    # duration scales with stretch, and a batch is the same as single utterances
    slow, same = festival.say_many(["Bob bought a purple map, maybe."] * 2, "ked_diphone",
                                   [1.3, 1.0])
    assert slow.audio.size > 1.2 * clip.audio.size
    np.testing.assert_array_equal(same.audio, clip.audio)
    assert same.segments == clip.segments


@needs_festival
def test_a_non_english_voice_speaks(festival: fest.Festival) -> None:
    others = [v for v in fest.available_voices() if fest.VOICES[v].language != "en"]
    if not others:
        pytest.skip("no non-English festival voice installed")
    voice = "czech_ph" if "czech_ph" in others else others[0]
    text = fest.sentence(fest.VOICES[voice].language, 5)
    clip = festival.say(text, voice)
    _check_segments(clip)
    speech = [(s, e, v) for s, e, v in clip.segments if v != "SIL"]
    assert len(speech) >= 8
    assert any(v in VOWEL_VISEMES for _, _, v in speech)
    assert _frame_rms(clip.audio, speech[0][0], speech[-1][1]) > 0.02


@needs_festival
def test_unknown_voice_is_an_error(festival: fest.Festival) -> None:
    with pytest.raises(ValueError, match="unknown festival voice"):
        festival.say("hello", "no_such_voice")
