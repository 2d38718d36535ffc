"""Training windows (export/dataset.py): shapes as served, closure boost, left-out sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """Three clips of 40 frames: speech (closures at 10–11), festival (its own), klettres."""
    n, m = 120, 19
    classes = np.zeros(n, np.int8)
    classes[[10, 11, 50, 51, 90]] = 2
    labels = np.zeros((n, m), np.float32)
    labels[:, 0] = np.repeat([0.0, 1.0, 2.0], 40)  # which clip a frame is from
    np.savez(tmp_path / "train.npz",
             features=np.random.default_rng(0).standard_normal((n, 4, 40)).astype(np.float16),
             labels=labels, classes=classes, offsets=np.array([0, 40, 80, 120]),
             controls=np.zeros((3, 7), np.float32),
             kinds=np.array(["speech", "festival", "klettres"]),
             voices=np.array(["a", "b", "c"]))
    return tmp_path


def _clips(batch: dict) -> set[float]:
    return set(np.unique(batch["target"][:, :, 0].numpy()).tolist())


def test_windows_are_shaped_as_served(corpus: Path) -> None:
    from vivify.engines.motion.generator_config import GeneratorConfig
    from vivify.export.dataset import WindowSampler

    cfg = GeneratorConfig()
    batch = WindowSampler(corpus, cfg).sample(64, np.random.default_rng(0))
    assert batch["mel"].shape == (64, 4 * cfg.context_frames, 40)
    assert batch["past"].shape == (64, cfg.cache, 19)
    assert batch["target"].shape == (64, cfg.window, 19)


def test_a_left_out_source_is_never_drawn_even_by_the_closure_boost(corpus: Path) -> None:
    from vivify.engines.motion.generator_config import GeneratorConfig
    from vivify.export.dataset import WindowSampler

    sampler = WindowSampler(corpus, GeneratorConfig(), closure_boost=1.0,
                            exclude=("festival",))
    batch = sampler.sample(256, np.random.default_rng(0))
    assert _clips(batch) == {0.0, 2.0}
    every = WindowSampler(corpus, GeneratorConfig()).sample(256, np.random.default_rng(0))
    assert _clips(every) == {0.0, 1.0, 2.0}


def test_the_closure_boost_draws_windows_around_closures(corpus: Path) -> None:
    from vivify.engines.motion.generator_config import GeneratorConfig
    from vivify.export.dataset import WindowSampler

    cfg = GeneratorConfig()
    sampler = WindowSampler(corpus, cfg, closure_boost=1.0)
    batch = sampler.sample(256, np.random.default_rng(1))
    # every target window holds a closure frame (class 2)
    starts = _window_starts(sampler, batch)
    closures = set(sampler.closure_frames.tolist())
    assert all(any(s + k in closures for k in range(cfg.window)) for s in starts)


def _window_starts(sampler, batch: dict) -> list[int]:
    """Global frame index of each window's first target frame (the fixture's features are
    unique per frame, so the target's audio rows identify it)."""
    cfg = sampler.cfg
    first = batch["mel"].numpy()[:, 4 * cfg.audio_context:4 * cfg.audio_context + 4]
    table = sampler.features[:-1]
    return [int(np.flatnonzero((table == f).all(axis=(1, 2)))[0]) for f in first]


def test_normalised_windows_are_the_streams_own(corpus: Path) -> None:
    """With ``norm_prior`` each clip's features are normalised as one stream from its first
    frame, and a window reaching past the clip's end sees the silence the run-time pads with,
    shifted by the clip's last state (not the unshifted silence before a stream)."""
    import dataclasses

    from vivify.engines.motion.feature_norm import normalise_clip
    from vivify.engines.motion.generator import silence_features
    from vivify.engines.motion.generator_config import GeneratorConfig
    from vivify.export.dataset import WindowSampler

    prior = tuple(0.1 * np.sin(np.arange(40)))
    cfg = dataclasses.replace(GeneratorConfig(), norm_prior=prior)
    raw = np.load(corpus / "train.npz")["features"][40:80].astype(np.float32)
    want, tail = normalise_clip(prior, raw, silence_features())
    sampler = WindowSampler(corpus, cfg)
    mel = sampler.gather(np.array([1]), np.array([38]))["mel"].numpy()[0].reshape(-1, 4, 40)
    assert np.array_equal(mel[:10], want[30:40])  # frames 30..39 of clip 1
    assert np.array_equal(mel[10], tail) and np.array_equal(mel[11], tail)  # 40, 41: past its end
    assert not np.array_equal(tail, silence_features())
    start = sampler.gather(np.array([1]), np.array([0]))["mel"].numpy()[0].reshape(-1, 4, 40)
    assert np.array_equal(start[:8], np.repeat(silence_features()[None], 8, axis=0))


def test_each_audio_frame_carries_its_class(corpus: Path) -> None:
    """The auxiliary head's targets: one class per audio context frame, the clip's own inside
    it and silence for the padding before and after it (as the run-time pads with silence)."""
    from vivify.engines.motion.generator_config import GeneratorConfig
    from vivify.export.dataset import BILABIAL_CLASS, SILENCE_CLASS, WindowSampler

    cfg = GeneratorConfig()  # A = 8, W + L = 4: frames s − 8 … s + 3
    sampler = WindowSampler(corpus, cfg)
    classes = sampler.gather(np.array([0, 0, 1]), np.array([2, 8, 38]))["classes"].numpy()
    assert classes.shape == (3, cfg.context_frames)
    # clip 0 from frame 2: frames −6…−1 are the padding before it, 0…5 speech
    assert classes[0].tolist() == [SILENCE_CLASS] * 6 + [0] * 6
    # from frame 8: frames 0…9 speech, the closure at 10, 11
    assert classes[1].tolist() == [0] * 10 + [BILABIAL_CLASS] * 2
    # clip 1 from frame 38: its frames 30…39, then 40, 41 past its end (the padding after it)
    assert classes[2].tolist() == [0] * 10 + [SILENCE_CLASS] * 2
