"""Baseline driver: streaming equivalence, mouth rules on real speech, life that never freezes
or drifts, interruption without jumps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import media
from vivify.engines.audio.audio_io import SAMPLES_PER_FRAME, load_audio
from vivify.engines.motion.baseline import BaselineConfig, BaselineDriver
from vivify.engines.motion.vector import INDEX, MOTION_DIM

FPS = 25
HEAD = [INDEX[n] for n in ("head_yaw", "head_pitch", "head_roll", "head_tx", "head_ty",
                           "head_scale")]
JAW = INDEX["jaw_open"]
BLINK = INDEX["blink_l"]

needs_espeak = pytest.mark.skipif(not media.have_espeak(), reason="espeak-ng not installed")


def _speech(tmp: Path, text: str, name: str) -> np.ndarray:
    return load_audio(media.espeak_wav(text, tmp / f"{name}.wav"))


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """About 3 s of espeak-ng speech with stops, fricatives and rounded vowels."""
    if not media.have_espeak():
        pytest.skip("espeak-ng not installed")
    return _speech(tmp_path_factory.mktemp("speech"), "Pop a bubble. We see two moose, sixty "
                   "five fish.", "sentence")


@pytest.fixture(scope="module")
def mixed(speech: np.ndarray) -> np.ndarray:
    """Speech, then silence, then noise at -40 dBFS: every code path of the feature extractor."""
    return np.concatenate([speech[:24_000], np.zeros(7_000, np.float32),
                           media.noise(-40.0, 0.6, seed=3), speech[24_000:]])


def _blink_onsets(frames: np.ndarray) -> int:
    closed = frames[:, BLINK] > 0.5
    return int(np.count_nonzero(closed[1:] & ~closed[:-1]) + closed[0])


def _frame_db(x: np.ndarray) -> np.ndarray:
    n = -(-x.size // SAMPLES_PER_FRAME)
    blocks = np.pad(x, (0, n * SAMPLES_PER_FRAME - x.size)).reshape(n, SAMPLES_PER_FRAME)
    return 10 * np.log10(np.mean(blocks.astype(np.float64) ** 2, axis=1) + 1e-12)


def _feed(driver: BaselineDriver, audio: np.ndarray, sizes: list[int]) -> np.ndarray:
    out, pos, k = [], 0, 0
    while pos < audio.size:
        step = sizes[k % len(sizes)]
        out.append(driver.push(audio[pos : pos + step]))
        pos, k = pos + step, k + 1
    out.append(driver.flush())
    return np.concatenate(out)


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [
    ("fps", 0), ("fps", 30), ("lookahead_frames", -1), ("lookahead_frames", 9),
    ("blink_rate_per_min", -1.0), ("sway_amplitude", 2.0), ("jaw_max", 1.5),
    ("gate_dbfs", 3.0), ("full_dbfs", -50.0), ("nod_gain", float("nan")),
])
def test_config_rejects_bad_values_naming_the_field(field: str, value: float) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=field):
        BaselineConfig(**kwargs)


# --- streaming ------------------------------------------------------------------------------


def test_frame_count_and_lookahead_latency() -> None:
    driver = BaselineDriver(BaselineConfig(lookahead_frames=1))
    assert driver.push(np.zeros(2 * SAMPLES_PER_FRAME - 1, np.float32)).shape == (0, MOTION_DIM)
    assert driver.push(np.zeros(1, np.float32)).shape == (1, MOTION_DIM)  # frame 0 + 1 ahead
    assert driver.push(np.zeros(SAMPLES_PER_FRAME, np.float32)).shape == (1, MOTION_DIM)
    assert driver.frames_emitted == 2
    assert driver.flush().shape == (1, MOTION_DIM)  # frame 2, padded with silence
    assert driver.frames_emitted == 3
    for n in (1, 639, 640, 641, 16_000):
        frames = BaselineDriver().drive(np.zeros(n, np.float32))
        assert frames.shape == (-(-n // SAMPLES_PER_FRAME), MOTION_DIM)
        assert frames.dtype == np.float32


@needs_espeak
@pytest.mark.parametrize("sizes", [[1], [333], [640], [16_000], [10**9], [7, 1500, 2, 641, 90]])
def test_any_chunking_is_bit_identical_to_drive(mixed: np.ndarray, sizes: list[int]) -> None:
    audio = mixed[:40_000] if sizes == [1] else mixed  # 1-sample pushes: keep the test fast
    expected = BaselineDriver(BaselineConfig(seed=7)).drive(audio)
    got = _feed(BaselineDriver(BaselineConfig(seed=7)), audio, sizes)
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)


@needs_espeak
@pytest.mark.parametrize("lookahead", [0, 2])
def test_streaming_equivalence_holds_for_other_lookaheads(
    mixed: np.ndarray, lookahead: int
) -> None:
    config = BaselineConfig(lookahead_frames=lookahead, seed=1)
    expected = BaselineDriver(config).drive(mixed)
    rng = np.random.default_rng(0)
    got = _feed(BaselineDriver(config), mixed, [int(s) for s in rng.integers(1, 3000, 64)])
    assert np.array_equal(got, expected)


def test_seed_changes_life_but_not_determinism() -> None:
    audio = np.zeros(10 * 16_000, np.float32)
    a, b = BaselineDriver(BaselineConfig(seed=1)).drive(audio), BaselineDriver(
        BaselineConfig(seed=1)).drive(audio)
    c = BaselineDriver(BaselineConfig(seed=2)).drive(audio)
    assert np.array_equal(a, b)
    assert not np.allclose(a[:, HEAD], c[:, HEAD])


# --- mouth rules ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["silence", "noise-40dBFS"])
def test_silence_and_quiet_noise_close_the_mouth_yet_the_face_lives(kind: str) -> None:
    seconds = 20.0
    audio = (np.zeros(int(seconds * 16_000), np.float32) if kind == "silence"
             else media.noise(-40.0, seconds, seed=5))
    frames = BaselineDriver().drive(audio)
    assert frames[:, JAW].max() < 0.02
    assert frames[:, INDEX["lip_press"]].max() < 0.02
    assert np.ptp(frames[:, INDEX["head_yaw"]]) > 0.03
    assert np.ptp(frames[:, INDEX["head_pitch"]]) > 0.02
    assert np.ptp(frames[:, INDEX["head_ty"]]) > 0.02  # breathing
    assert np.ptp(frames[:, INDEX["gaze_x"]]) > 0.02
    assert _blink_onsets(frames) >= 2
    moving = np.any(np.diff(frames, axis=0) != 0, axis=1)
    assert moving.all(), "some consecutive frames are identical: a frozen face"


@needs_espeak
def test_jaw_follows_speech_energy(speech: np.ndarray) -> None:
    frames = BaselineDriver().drive(speech)
    level = np.maximum(_frame_db(speech), -60.0)
    assert np.corrcoef(frames[:, JAW], level)[0, 1] > 0.7
    assert frames[:, JAW].max() > 0.6


@needs_espeak
def test_mouth_opens_in_speech_and_closes_in_pauses(tmp_path: Path) -> None:
    word = _speech(tmp_path, "Hello there, how are you?", "hello")
    pause = np.zeros(32_000, np.float32)  # 2 s
    word = word[: word.size - word.size % SAMPLES_PER_FRAME]  # whole frames: easy indexing
    n_word = word.size // SAMPLES_PER_FRAME
    frames = BaselineDriver().drive(np.concatenate([word, pause, word]))
    in_pause = frames[n_word + 8 : n_word + 50 - 2, JAW]  # skip the 320 ms closing tail
    loud = _frame_db(word) > -25
    assert in_pause.max() < 0.02
    assert frames[:n_word][loud, JAW].mean() > 0.3
    assert frames[-n_word:][loud, JAW].mean() > 0.3


@needs_espeak
def test_vowels_shape_the_lips(tmp_path: Path) -> None:
    spread = BaselineDriver().drive(_speech(tmp_path, "cheese, please, green tea", "ee"))
    rounded = BaselineDriver().drive(_speech(tmp_path, "you two, blue moon, who knew", "oo"))

    def mean(frames: np.ndarray, dim: str) -> float:
        return float(frames[frames[:, JAW] > 0.2, INDEX[dim]].mean())

    assert mean(spread, "lip_stretch") > mean(spread, "lip_round") + 0.15
    assert mean(rounded, "lip_round") > mean(rounded, "lip_stretch") + 0.15


@needs_espeak
def test_fricatives_raise_the_upper_lip_and_stops_press_the_lips(tmp_path: Path) -> None:
    fricatives = BaselineDriver().drive(_speech(tmp_path, "fish, sauce, sixty", "fric"))
    assert fricatives[:, INDEX["upper_lip_raise"]].max() > 0.3
    bilabial = BaselineDriver().drive(_speech(tmp_path, "a papa, a baba", "stops"))
    press = bilabial[:, INDEX["lip_press"]]
    assert press.max() > 0.6
    assert np.count_nonzero(press > 0.5) < 0.3 * press.size  # closures are short
    vowel = BaselineDriver().drive(_speech(tmp_path, "aaaah", "vowel"))
    assert vowel[:, INDEX["lip_press"]].max() < 0.1


# --- life -----------------------------------------------------------------------------------


def test_blink_rate_is_plausible_and_blinks_close_fully() -> None:
    minute = np.zeros(60 * 16_000, np.float32)
    frames = BaselineDriver(BaselineConfig(seed=3)).drive(minute)
    assert 8 <= _blink_onsets(frames) <= 26
    assert frames[:, BLINK].max() == pytest.approx(1.0)
    assert np.array_equal(frames[:, BLINK], frames[:, INDEX["blink_r"]])
    closed_runs = np.diff(np.flatnonzero(np.diff(np.r_[0, frames[:, BLINK] > 0.05, 0])))[::2]
    assert closed_runs.max() <= 8  # ≤ 320 ms: a blink, not a doze
    fast = BaselineDriver(BaselineConfig(seed=3, blink_rate_per_min=30)).drive(minute)
    none = BaselineDriver(BaselineConfig(seed=3, blink_rate_per_min=0)).drive(minute)
    assert _blink_onsets(fast) > _blink_onsets(frames)
    assert none[:, BLINK].max() == 0.0


@needs_espeak
def test_ten_minutes_do_not_drift(speech: np.ndarray) -> None:
    unit = np.concatenate([speech, np.zeros(16_000, np.float32)])
    audio = np.tile(unit, -(-600 * 16_000 // unit.size))[: 600 * 16_000]
    driver = BaselineDriver()
    frames = np.concatenate([driver.push(audio[i : i + 64_000])
                             for i in range(0, audio.size, 64_000)] + [driver.flush()])
    assert frames.shape[0] == 600 * FPS
    first, last = frames[: 60 * FPS, HEAD], frames[-60 * FPS :, HEAD]
    assert np.all(np.abs(first.mean(axis=0) - last.mean(axis=0)) < 0.05)
    ratio = last.std(axis=0) / first.std(axis=0)
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio
    assert np.abs(frames[:, HEAD]).max() < 0.5


def test_clear_drops_pending_audio_and_keeps_the_pose_continuous() -> None:
    loud = media.sine(220.0, 3.0, dbfs=-15.0) + 0.1 * media.noise(-12.0, 3.0, seed=1)
    silence = np.zeros(2 * 16_000, np.float32)
    driver = BaselineDriver()
    before = driver.push(loud[: 2 * 16_000 + 300])  # interrupted mid-frame, lookahead buffered
    assert before[-1, JAW] > 0.4
    driver.clear()
    after = driver.push(silence)
    assert driver.frames_emitted == before.shape[0] + after.shape[0]
    frames = np.concatenate([before, after])
    step = np.abs(np.diff(frames[:, HEAD], axis=0))
    boundary = before.shape[0] - 1
    assert np.all(step[boundary] <= step.max(axis=0) + 1e-6)
    # the pose carries on as if the audio had simply stopped at the last shown frame:
    # no restart of sway phases, breathing or blinks
    shown = before.shape[0] * SAMPLES_PER_FRAME
    natural = BaselineDriver().drive(np.concatenate([loud[:shown], silence]))
    assert np.abs(after[:, HEAD] - natural[before.shape[0] : frames.shape[0], HEAD]).max() < 0.02
    # the mouth closes smoothly: it falls, but not to zero in one frame, and ends shut
    assert 0.05 < after[0, JAW] < before[-1, JAW]
    assert after[10:, JAW].max() < 0.02


def test_controls_add_their_offset_to_every_frame_from_then_on() -> None:
    """The baseline has no control input: set_controls moves its frames by the controls'
    motion offset (clipped), the frames before it stay as they were."""
    from vivify.engines.motion.controls import Controls, motion_offset
    from vivify.engines.motion.vector import clip_motion

    audio = np.random.default_rng(3).normal(0, 0.05, 2 * 16000).astype(np.float32)
    half = audio.size // 2
    plain = BaselineDriver(BaselineConfig()).drive(audio)
    steered = BaselineDriver(BaselineConfig())
    before = steered.push(audio[:half])
    controls = Controls(emotion="happy", intensity=0.5, gaze=(0.3, -0.2), distance=0.4)
    steered.set_controls(controls)
    after = np.concatenate([steered.push(audio[half:]), steered.flush()])
    np.testing.assert_array_equal(before, plain[:len(before)])
    np.testing.assert_array_equal(after, clip_motion(plain[len(before):] + motion_offset(controls)))
    assert not motion_offset(Controls()).any()  # neutral controls: no offset at all
