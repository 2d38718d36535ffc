"""Causal per-stream normalisation of the log-mel features: one voice and microphone made to
look like the training corpus's average one.

Why: the generator learned its voices' long-term spectra along with the speech; on a voice it
never heard (another synthesiser, another vocal tract, another microphone), the same bilabial
reads less surely, and the lips half-close (issue 13). A speaker's and a channel's colour is,
to first order, a constant added to every log-mel band; a running mean of the stream's own
speech frames measures it, and subtracting the difference to the corpus's mean (the
``prior``) removes it. This is cepstral mean normalisation as speech recognisers use it, made
causal so a stream never waits for it:

- the state is the running per-band mean, starting at the prior (so a stream's first frame,
  and the silence before it, are not shifted at all);
- a frame updates it only when it is speech-loud, within ``GATE`` of the running level, so
  pauses and digital silence do not drag it down;
- every frame, speech or not, is shifted by ``mean − prior`` *after* its own update (causal:
  the frame and the past only).

The same code runs in training (:func:`normalise_clip` on the corpus's stored features) and at
run time (:class:`FeatureNorm` in :class:`~vivify.engines.motion.generator.MotionGenerator`,
one step per video frame), frame by frame on float32, so both see identical numbers.
"""

from __future__ import annotations

import numpy as np

RATE = np.float32(1.0 / 50.0)  # per speech frame: a 2 s time constant at 25 fps
GATE = np.float32(0.4)  # feature units (×30 dB): frames quieter than the level − 12 dB skip


class FeatureNorm:
    """One stream's normaliser (one per session, not thread-safe).

    ``prior``: (N_MELS,) mean of the training corpus's speech features (the generator's config
    ``norm_prior``). ``state`` / ``restore`` let a stream take back frames it computed too
    early (an interruption drops audio that was already featurised as lookahead).
    """

    def __init__(self, prior: np.ndarray | tuple[float, ...]) -> None:
        self.prior = np.asarray(prior, dtype=np.float32).copy()
        if self.prior.ndim != 1 or not np.isfinite(self.prior).all():
            raise ValueError("the normalisation prior must be a finite (n_mels,) vector")
        self.mean = self.prior.copy()

    @property
    def state(self) -> np.ndarray:
        return self.mean.copy()

    def restore(self, state: np.ndarray) -> None:
        self.mean = np.asarray(state, dtype=np.float32).copy()

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """One video frame's (MELS_PER_FRAME, N_MELS) features → the normalised ones."""
        bands = frame.mean(axis=0, dtype=np.float32)
        if bands.mean(dtype=np.float32) > self.mean.mean(dtype=np.float32) - GATE:
            self.mean = (self.mean + RATE * (bands - self.mean)).astype(np.float32)
        return self.shift(frame)

    def shift(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` shifted by the current state, without updating it (the silence that pads
        a stream's end is shifted as the frames before it)."""
        return (frame - (self.mean - self.prior)).astype(np.float32)


def normalise_clip(prior: np.ndarray | tuple[float, ...], features: np.ndarray,
                   silence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A whole clip's (n, MELS_PER_FRAME, N_MELS) features normalised as a stream from its first
    frame, and the silence frame shifted by the state after its last frame (what the run-time
    pads the stream's end with)."""
    norm = FeatureNorm(prior)
    out = np.empty(features.shape, dtype=np.float32)
    for v in range(features.shape[0]):
        out[v] = norm(features[v].astype(np.float32))
    return out, norm.shift(silence)


def corpus_prior(features: np.ndarray, speech: np.ndarray) -> tuple[float, ...]:
    """The prior: the per-band mean of the corpus's speech frames (``speech`` a frame mask)."""
    return tuple(round(float(v), 5) for v in
                 features[speech].astype(np.float64).mean(axis=(0, 1)))
