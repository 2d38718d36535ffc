"""Causal feature normalisation (engines/motion/feature_norm.py): a voice's or a microphone's
constant colour is taken out as the stream goes, silence leaves it alone, training and run
time compute the same numbers, and the live stream stays exact under chunking and interrupts."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vivify.engines.audio.audio_io import SAMPLES_PER_FRAME
from vivify.engines.motion.feature_norm import FeatureNorm, corpus_prior, normalise_clip
from vivify.engines.motion.generator import (
    DEFAULT_MANIFEST,
    GeneratorRunner,
    ManifestError,
    MotionGenerator,
    log_mel_frames,
    silence_features,
)

SR = 16_000


def voiced(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like audio: a buzz with a moving formant, in syllables, with pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    buzz = np.sign(np.sin(2 * np.pi * 120 * t)) * 0.1
    formant = np.sin(2 * np.pi * (700 + 400 * np.sin(2 * np.pi * 3 * t)) * t)
    env = np.repeat(rng.uniform(size=int(seconds * 5) + 1) > 0.3, SR // 5)[: t.size]
    return ((buzz * (0.5 + 0.5 * formant)) * env).astype(np.float32)


@pytest.fixture(scope="module")
def prior() -> np.ndarray:
    feats = log_mel_frames(voiced(6.0, seed=1))
    loud = feats.mean(axis=(1, 2)) > -1.0
    return np.asarray(corpus_prior(feats, loud), np.float32)


def test_a_constant_colour_is_taken_out_as_the_stream_goes(prior: np.ndarray) -> None:
    x = voiced(8.0)
    plain = log_mel_frames(x)
    quiet = log_mel_frames(x * 0.25)  # −12 dB: a constant offset on every band
    a, _ = normalise_clip(prior, plain, silence_features())
    b, _ = normalise_clip(prior, quiet, silence_features())
    speech = plain.mean(axis=(1, 2)) > -1.0
    raw_gap = np.abs(plain - quiet)[speech].mean()
    late = np.zeros_like(speech)
    late[-50:] = True  # the last 2 s, after the running mean has settled
    assert raw_gap > 0.35
    assert np.abs(a - b)[speech & late].mean() < 0.25 * raw_gap


def test_silence_neither_moves_the_state_nor_is_moved_at_the_start(prior: np.ndarray) -> None:
    norm = FeatureNorm(prior)
    silence = silence_features()
    for _ in range(20):
        out = norm(silence)
    assert np.array_equal(norm.state, prior)
    assert np.array_equal(out, silence)  # a stream starts unshifted: like the padding before it


def test_training_and_run_time_see_the_same_features(prior: np.ndarray) -> None:
    feats = log_mel_frames(voiced(3.0))
    clip, tail = normalise_clip(prior, feats, silence_features())
    norm = FeatureNorm(prior)
    stream = np.stack([norm(f) for f in feats])
    assert np.array_equal(clip, stream)
    assert np.array_equal(tail, norm.shift(silence_features()))


def test_a_bad_prior_is_refused() -> None:
    with pytest.raises(ValueError):
        FeatureNorm(np.array([np.nan] * 40))


@pytest.fixture
def normalised_manifest(tmp_path: Path, prior: np.ndarray) -> Path:
    """The shipped artifact with a normalisation prior in its config (the graph is the same:
    the normalisation happens before it)."""
    manifest = json.loads(DEFAULT_MANIFEST.read_text())
    shutil.copy(DEFAULT_MANIFEST.parent / manifest["file"], tmp_path / manifest["file"])
    manifest["config"]["norm_prior"] = prior.tolist()
    path = tmp_path / "motion_generator.json"
    path.write_text(json.dumps(manifest))
    return path


def test_streaming_equals_offline_with_normalisation(normalised_manifest: Path) -> None:
    runner = GeneratorRunner(normalised_manifest)
    plain = GeneratorRunner(DEFAULT_MANIFEST)
    audio = voiced(4.0, seed=2) * 0.3
    offline = MotionGenerator(runner, seed=3).drive(audio)
    assert not np.array_equal(offline, MotionGenerator(plain, seed=3).drive(audio))
    gen = MotionGenerator(runner, seed=3)
    cuts = [0, 333, 2000, 2001, 9000, 30000, audio.size]
    streamed = np.concatenate([gen.push(audio[a:b]) for a, b in itertools.pairwise(cuts)]
                              + [gen.flush()])
    assert np.array_equal(streamed, offline)


def test_an_interrupt_rolls_the_state_back_to_the_frames_shown(
        normalised_manifest: Path) -> None:
    """Lookahead frames were normalised before the interrupt dropped their audio; the state
    the stream continues with is the one after the frames shown, as if they never came."""
    runner = GeneratorRunner(normalised_manifest)
    audio = voiced(3.0, seed=4)
    loud = log_mel_frames(audio).mean(axis=(1, 2)) > -1.0
    k = next(v for v in range(30, loud.size) if loud[v])  # the dropped lookahead frame: speech
    cut = (k + 1) * SAMPLES_PER_FRAME + 123
    interrupted = MotionGenerator(runner, seed=5)
    interrupted.push(audio[:cut])
    shown = interrupted.frames_emitted
    assert shown == k
    interrupted.clear()
    reference = MotionGenerator(runner, seed=5)
    reference.push(audio[: shown * SAMPLES_PER_FRAME])
    reference.flush()  # pads and runs to ``shown``, then drops the padded lookahead
    assert reference.frames_emitted == shown
    # (the frames differ: the reference's last frame had silence as its lookahead)
    assert interrupted._norm is not None and reference._norm is not None
    assert np.array_equal(interrupted._norm.state, reference._norm.state)
    assert not np.array_equal(interrupted._norm.state, FeatureNorm(runner.spec.norm_prior).state)


def test_the_manifest_prior_is_checked(tmp_path: Path, normalised_manifest: Path) -> None:
    manifest = json.loads(normalised_manifest.read_text())
    manifest["config"]["norm_prior"] = [0.0] * 3
    normalised_manifest.write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="norm_prior"):
        GeneratorRunner(normalised_manifest)
