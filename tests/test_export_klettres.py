"""KLettres' human recordings as training audio: the catalogue, and labels that fit the sound.

Why these checks: the labels are made (DTW from an espeak-ng rendition, then snapped to the
recording's closures), so they are checked against what the audio itself shows — silence where
the person is silent, the lips shut where a /p/'s closure silences the recording — and against
espeak renditions whose phone times are known. Skips, with the reason, where klettres-data or
libespeak-ng is not installed.
"""

from __future__ import annotations

import ctypes
import itertools

import numpy as np
import pytest

from vivify.export.data import klettres as kl
from vivify.export.data import klettres_acoustics as acoustics
from vivify.export.data import klettres_espeak as kesp
from vivify.export.data import labels as lab
from vivify.export.data.klettres_align import finish


def _have_libespeak() -> bool:
    try:
        ctypes.CDLL("libespeak-ng.so.1")
    except OSError:
        return False
    return True


pytestmark = [
    pytest.mark.skipif(not kl.available(), reason="klettres-data is not installed "
                       "(apt-get install klettres-data: 40 MB download, 50 MB installed)"),
    pytest.mark.skipif(not _have_libespeak(), reason="libespeak-ng is not installed "
                       "(apt-get install espeak-ng)"),
]


def _rec(language: str, text: str) -> kl.Recording:
    return next(r for r in kl.recordings() if r.language == language and r.text == text)


def _level(audio: np.ndarray) -> np.ndarray:
    """dB per 10 ms frame, computed here from the samples, independently of the module."""
    n = audio.size // 160
    frames = audio[:n * 160].reshape(n, 160).astype(np.float64)
    return 10.0 * np.log10((frames ** 2).mean(axis=1) + 1e-12)


def _sample() -> list[kl.Recording]:
    """Two recordings per language (a letter and a syllable where there are both)."""
    out = []
    for lang in kl.languages():
        recs = [r for r in kl.recordings() if r.language == lang]
        kinds = {r.kind: r for r in recs[len(recs) // 3:]}
        out += list(kinds.values())
    return out


@pytest.fixture(scope="module")
def sample() -> list[tuple[kl.Recording, kl.Alignment]]:
    return [(r, kl.align(r)) for r in _sample()]


def test_catalogue_languages_and_speakers() -> None:
    recs = kl.recordings()
    assert len(recs) >= 1800
    assert len({r.path for r in recs}) == len(recs)
    langs = kl.languages()
    assert len(langs) == 20 and set(langs) <= set(kl.VOICES)
    assert all(r.path.is_file() and r.text for r in recs)
    # leave-one-language-out: every speaker belongs to exactly one language
    for r in recs:
        assert r.speaker.split("/")[0] == r.language
        assert r.kind in ("letters", "syllables")
    assert {r.speaker for r in recs if r.language == "de"} == {"de/letters", "de/syllables"}
    # the sounds.xml mistakes are mended: one file, one text
    assert _rec("lt", "TEIS").path.name == "teis.ogg"
    assert _rec("lt", "TIES").path.name == "ties.ogg"


def test_segments_contiguous_cover_the_clip_and_are_visemes(
        sample: list[tuple[kl.Recording, kl.Alignment]]) -> None:
    for rec, al in sample:
        clip, segs = al.clip, al.clip.segments
        duration = clip.audio.size / 16_000
        assert clip.audio.dtype == np.float32 and clip.source == f"klettres:{rec.language}"
        assert clip.speaker == rec.speaker and clip.text == rec.text
        assert segs[0][0] == 0.0 and segs[-1][1] == pytest.approx(duration, abs=1e-6)
        for (_, e, v), (s2, _, v2) in itertools.pairwise(segs):
            assert e == pytest.approx(s2, abs=1e-9) and v != v2, (rec, segs)
        assert all(e > s and v in lab.VISEMES for s, e, v in segs), (rec, segs)
        assert any(v != "SIL" for _, _, v in segs), rec


def test_silence_where_the_person_is_quiet(
        sample: list[tuple[kl.Recording, kl.Alignment]]) -> None:
    """Where a clip starts or ends in 150 ms of quiet (35 dB under its peak), the labels say SIL
    there, and no speech segment lies wholly inside a quiet stretch that long."""
    for rec, al in sample:
        level = _level(al.clip.audio)
        quiet = level < level.max() - 35.0
        segs = al.clip.segments
        if quiet[:15].all():
            assert segs[0][2] == "SIL" and segs[0][1] >= 0.1, (rec, segs[:2])
        if quiet[-15:].all():
            assert segs[-1][2] == "SIL" and segs[-1][1] - segs[-1][0] >= 0.1, (rec, segs[-2:])
        for s, e, v in segs:
            lo, hi = int(s * 100), int(np.ceil(e * 100))
            if v != "SIL" and hi - lo >= 15:
                assert not quiet[lo:hi].all(), (rec, (s, e, v))


def test_bilabial_closure_is_labelled_bmp() -> None:
    """German "OPA": the /p/ closure is a low-energy gap between the two vowels; the BMP segment
    must cover most of it. Czech "BA": the /b/ is a 160 ms voice bar before the burst; BMP must
    run up to the burst (the level's jump into the vowel)."""
    clip = kl.label(_rec("de", "OPA"))
    level = _level(clip.audio)
    loud = np.flatnonzero(level > level.max() - 10.0)
    inner = np.arange(loud[0], loud[-1] + 1)
    gap = inner[level[inner] < level.max() - 20.0]
    assert 4 <= gap.size <= 20  # 40–200 ms of closure, found from the samples alone
    gap_s, gap_e = gap.min() * 0.01, (gap.max() + 1) * 0.01
    bmp = [(s, e) for s, e, v in clip.segments if v == "BMP"]
    assert len(bmp) == 1
    overlap = min(bmp[0][1], gap_e) - max(bmp[0][0], gap_s)
    assert overlap >= 0.6 * (gap_e - gap_s), (bmp, (gap_s, gap_e))
    assert [v for _, _, v in clip.segments] == ["SIL", "OH", "BMP", "AA", "SIL"]

    clip = kl.label(_rec("cs", "BA"))
    level = _level(clip.audio)
    burst = (3 + int(np.argmax(np.diff(level[3:])))) * 0.01  # steepest rise: into the vowel
    bmp = [(s, e) for s, e, v in clip.segments if v == "BMP"]
    assert len(bmp) == 1 and bmp[0][0] < burst - 0.1 and abs(bmp[0][1] - burst) < 0.04, (
        bmp, burst)


def test_dtw_path_is_monotonic(sample: list[tuple[kl.Recording, kl.Alignment]]) -> None:
    for rec, al in sample:
        path = al.path
        steps = np.diff(path, axis=0)
        assert (path[0] == 0).all(), rec
        assert ((steps >= 0) & (steps <= 1)).all() and (steps.sum(axis=1) >= 1).all(), rec
    # and it finds a known warp: b is a with its second half stretched twice
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 3))
    b = np.concatenate([a[:20], np.repeat(a[20:], 2, axis=0)])
    cost = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    path = acoustics.dtw(cost)
    truth = np.concatenate([np.arange(20), np.repeat(np.arange(20, 40), 2)])
    assert (path[-1] == (39, 59)).all()
    assert all(abs(i - truth[j]) <= 1 for i, j in path)


def test_labels_match_known_phone_times() -> None:
    """espeak-ng renditions in another variant, rate and with noise stand in for a person whose
    phone times are known: the transferred boundaries inside the word are within 40 ms on
    average and the viseme sequence is the same."""
    rng = np.random.default_rng(1)
    errors, compared = [], 0
    for k, rec in enumerate(_sample()):
        voice = kl.VOICES[rec.language] + ("+klatt3", "+m3", "+f5")[k % 3]
        audio, rate, events = kesp.synthesise(rec.spoken, voice, int(rng.uniform(100, 200)))
        phones = kesp.clean_phonemes(kesp.stable_phonemes(events, audio.size, rate))
        x = acoustics.resample(audio, rate)
        phones = kesp.closures_to_stops(phones, acoustics.spectra(x)[1])
        lead = 0.3
        x = np.concatenate([np.zeros(int(lead * 16_000), np.float32), x,
                            np.zeros(4800, np.float32)])
        x += rng.normal(0.0, 1e-3, x.size).astype(np.float32)
        truth = finish(lab.segments([(s + lead, e + lead, n) for s, e, n in phones]),
                           x.size / 16_000)
        al = kl.align_audio(rec, x)
        got = al.clip.segments
        said = finish(al.espeak_segments, 10.0)
        if [v for *_, v in said] != [v for *_, v in truth]:
            continue  # the variant said it differently (a reduced vowel): nothing to compare
        compared += 1
        assert [v for *_, v in got] == [v for *_, v in truth], (rec, got, truth)
        errors += [abs(g[0] - t[0]) for g, t in zip(got[2:-1], truth[2:-1], strict=True)]
    assert compared >= 15 and errors and float(np.mean(errors)) < 0.04, (compared, errors)


def test_deterministic() -> None:
    """Labelling is a pure function of the recording (its cost is measured by hand, not here:
    the module docstring's ~25 ms per recording)."""
    recs = kl.recordings()[::200]
    first = [kl.label(r) for r in recs]
    again = [kl.label(r) for r in recs]
    for a, b in zip(first, again, strict=True):
        assert a.segments == b.segments and np.array_equal(a.audio, b.audio)
