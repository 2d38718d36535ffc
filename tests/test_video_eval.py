"""The in-project video evaluator's scores (export/video_eval.py) on openings with known answers."""

from __future__ import annotations

import numpy as np

from vivify.export.video_eval import FPS, Scores, score, summarise

SEGS = [(0.5, 0.65, "AH"), (0.65, 0.75, "BMP"), (0.75, 1.0, "AA"), (1.0, 1.1, "BMP"),
        (1.1, 1.35, "EH"), (1.35, 1.45, "TDN"), (1.45, 1.7, "AH")]


def speech_audio(seconds: float = 2.5) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    x = 0.3 * np.sin(2 * np.pi * 200 * t)
    x[(t < 0.5) | (t > 1.7)] = 0.0
    for a, b, v in SEGS:  # quieter closures, louder vowels: an envelope the mouth follows
        if v == "BMP":
            x[(t >= a) & (t < b)] *= 0.05
    return x.astype(np.float32)


def ideal_opening(n: int) -> np.ndarray:
    t = (np.arange(n) + 0.5) / FPS
    op = np.full(n, 0.01)
    for a, b, v in SEGS:
        inside = (t >= a) & (t < b)
        op[inside] = {"BMP": 0.0, "TDN": 0.04}.get(v, 0.1)
    return op


def test_a_mouth_that_follows_the_phones_scores_full_marks() -> None:
    audio = speech_audio()
    n = audio.size // 640
    s = score(ideal_opening(n), SEGS, audio)
    assert s.bilabial_closed == 1.0 and s.vowel_opened == 1.0 and s.silence_at_rest == 1.0
    assert s.lag_frames == 0 and s.open_p90 > 0.09


def test_a_mumbling_mouth_and_a_late_one_are_caught() -> None:
    audio = speech_audio()
    n = audio.size // 640
    ideal = ideal_opening(n)
    t = (np.arange(n) + 0.5) / FPS
    speaking = (t >= 0.5) & (t < 1.7)
    never_closes = np.where(speaking, np.maximum(ideal, 0.07), ideal)  # closes only in silence
    assert score(never_closes, SEGS, audio).bilabial_closed == 0.0
    late = np.concatenate([np.full(3, 0.01), ideal[:-3]])  # the video 3 frames behind
    assert score(late, SEGS, audio).lag_frames == 3
    open_in_silence = ideal.copy()
    open_in_silence[:8] = 0.08
    at_rest = score(open_in_silence, SEGS, audio).silence_at_rest
    assert at_rest is not None and at_rest < 0.8


def test_the_summary_pools_bilabials_and_vowels_over_clips() -> None:
    """A clip with one missed bilabial and one with nine closed ones: 9 of 10 closed, not the
    clip mean (0 + 1) / 2; clips without any bilabial do not count towards the rate."""
    def clip(closed: float | None, n: int) -> Scores:
        return Scores(bilabial_closed=closed, vowel_opened=1.0, open_p90=0.1,
                      silence_at_rest=1.0, lag_frames=0, bilabials=n, open_vowels=2)

    out = summarise([clip(0.0, 1), clip(1.0, 9), clip(None, 0)])
    assert out["bilabial_closed"] == 0.9
    assert out["bilabials"] == 10 and out["open_vowels"] == 6
    assert out["vowel_opened"] == 1.0 and out["clips"] == 3


def test_the_validation_split_speaks_with_training_voices_and_held_out_sentences() -> None:
    """Tuning looks at the validation split: voices the model was trained on, sentences it
    was not; the held-out split keeps to the evaluation voices."""
    from vivify.export import holdout_eval as he
    from vivify.export.data import build

    val = [voice for voice, _ in he.espeak_clips(3, 0, held_out=False)]
    test = [voice for voice, _ in he.espeak_clips(3, 0)]
    assert len(set(val)) == 3
    assert all(v.removeprefix("espeak:") in build.TRAIN_VOICES for v in val)
    assert all(v.removeprefix("espeak:") in build.EVAL_VOICES for v in test)
