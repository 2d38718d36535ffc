"""Windows from the corpus, shaped exactly as the run-time feeds the model.

A training example for a window starting at frame s of a clip: audio features of frames
[s − A, s + W + L) (silence features outside the clip, as the run-time pads with silence),
the K past label frames [s − K, s) (rest motion before the clip, as a new session starts at
rest), the clip's controls and the W target frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vivify.engines.motion.feature_norm import normalise_clip
from vivify.engines.motion.generator import silence_features
from vivify.engines.motion.generator_config import GeneratorConfig

BILABIAL_CLASS = 2  # export.data.labels.frame_classes: 0 speech, 1 silence, 2 bilabial
SILENCE_CLASS = 1


class WindowSampler:
    """Random training windows from ``train.npz`` (whole corpus held in memory, ~150 MB)."""

    def __init__(self, corpus: Path | str, cfg: GeneratorConfig, split: str = "train",
                 closure_boost: float = 0.0, exclude: tuple[str, ...] = ()) -> None:
        """``closure_boost``: the share of windows drawn so that their targets hold a bilabial
        closure frame (class 2), on top of those uniform sampling finds (issue 13: a model
        regressing to the mean under-closes short closures on voices it never heard).
        ``exclude``: clip kinds never drawn (``festival``, ``klettres``...), for a
        leave-one-source-out model."""
        d = np.load(Path(corpus) / f"{split}.npz")
        self.cfg = cfg
        self.closure_boost = closure_boost
        self.closure_frames = np.flatnonzero(d["classes"] == BILABIAL_CLASS)
        feats = d["features"].astype(np.float32)
        self.offsets = d["offsets"]
        tails = clip_features(cfg, feats, self.offsets)  # normalises ``feats`` in place
        # rows: the clips' frames, the silence before any stream, each clip's end silence
        self.features = np.concatenate([feats, silence_features()[None], tails])
        self.silence_row = feats.shape[0]
        self.tail_rows = self.silence_row + 1
        # each feature row's frame class; the padding rows (before and after a clip) are silence
        self.frame_classes = np.concatenate([d["classes"].astype(np.int64), np.full(
            1 + tails.shape[0], SILENCE_CLASS, np.int64)])
        self.labels = np.concatenate([d["labels"], np.zeros((1, d["labels"].shape[1]),
                                                             np.float32)])  # last row: rest
        self.rest_row = d["labels"].shape[0]
        self.lengths = np.diff(self.offsets)
        self.controls = d["controls"].astype(np.float32)
        ok = (self.lengths >= cfg.window) & ~np.isin(d["kinds"], list(exclude))
        if exclude:  # closures of excluded clips are not drawn either
            clip_of = np.searchsorted(self.offsets, self.closure_frames, side="right") - 1
            self.closure_frames = self.closure_frames[ok[clip_of]]
        self.clip_p = np.where(ok, self.lengths - cfg.window + 1, 0).astype(np.float64)
        self.clip_p /= self.clip_p.sum()

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        lab = self.labels[:-1]
        return lab.mean(0), np.maximum(lab.std(0), 0.02)

    def sample(self, batch: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        clip = rng.choice(self.clip_p.size, size=batch, p=self.clip_p)
        start = (rng.uniform(size=batch) * (self.lengths[clip] - cfg.window + 1)).astype(int)
        boosted = rng.uniform(size=batch) < self.closure_boost
        if boosted.any() and self.closure_frames.size:
            frame = rng.choice(self.closure_frames, size=int(boosted.sum()))
            c = np.searchsorted(self.offsets, frame, side="right") - 1
            local = frame - self.offsets[c] - rng.integers(0, cfg.window, size=c.size)
            ok = self.clip_p[c] > 0
            clip[boosted] = np.where(ok, c, clip[boosted])
            start[boosted] = np.where(ok, np.clip(local, 0, self.lengths[c] - cfg.window),
                                      start[boosted])
        return self.gather(clip, start)

    def gather(self, clip: np.ndarray, start: np.ndarray) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        off, n = self.offsets[clip][:, None], self.lengths[clip][:, None]
        a = start[:, None] + np.arange(-cfg.audio_context, cfg.window + cfg.lookahead)[None]
        a_idx = np.where(a < 0, self.silence_row,
                         np.where(a < n, off + a, self.tail_rows + clip[:, None]))
        p = start[:, None] + np.arange(-cfg.cache, 0)[None]
        p_idx = np.where(p >= 0, off + p, self.rest_row)
        x_idx = off + start[:, None] + np.arange(cfg.window)[None]
        mel = self.features[a_idx].reshape(len(clip), -1, cfg.n_mels)  # (B, 4T, N_MELS)
        return {
            "mel": torch.from_numpy(mel),
            "past": torch.from_numpy(self.labels[p_idx]),  # (B, K, M)
            "target": torch.from_numpy(self.labels[x_idx]),  # (B, W, M)
            "controls": torch.from_numpy(self.controls[clip]),  # (B, C)
            "classes": torch.from_numpy(self.frame_classes[a_idx]),  # (B, T) of the audio
        }


def clip_features(cfg: GeneratorConfig, features: np.ndarray, offsets: np.ndarray
                  ) -> np.ndarray:
    """The corpus's stored features as the run-time computes them: with ``cfg.norm_prior``,
    each clip normalised in place as one stream from its first frame
    (:mod:`vivify.engines.motion.feature_norm`). Returns each clip's end-padding silence frame
    (n_clips, MELS_PER_FRAME, N_MELS): the silence shifted by the clip's last state."""
    silence = silence_features()
    tails = np.repeat(silence[None], len(offsets) - 1, axis=0)
    if cfg.norm_prior:
        for c in range(len(offsets) - 1):
            lo, hi = int(offsets[c]), int(offsets[c + 1])
            features[lo:hi], tails[c] = normalise_clip(cfg.norm_prior, features[lo:hi], silence)
    return tails


def noisy_past(past: torch.Tensor, std: torch.Tensor, max_noise: float | torch.Tensor,
               gen: torch.Generator) -> torch.Tensor:
    """Cache augmentation against exposure bias: at run time the cache holds the model's own
    (imperfect) frames, so training sees labels plus noise of a random size (normalised units;
    ``max_noise`` a scalar or one value per motion dim)."""
    scale = torch.rand(past.shape[0], 1, 1, generator=gen) * max_noise
    return past + scale * std * torch.randn(past.shape, generator=gen)
