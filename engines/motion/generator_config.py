"""The generator's one frozen config (no torch here, so tools can read it without torch).

Stored inside every checkpoint (``asdict``) and in the ONNX metadata / manifest as JSON; the
run-time (``vivify.engines.motion.generator``) reads the same keys from the manifest.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from vivify.engines.audio.audio_io import FPS
from vivify.engines.motion.generator import CONTROL_NAMES, MELS_PER_FRAME, MOUTH_INDICES, N_MELS
from vivify.engines.motion.vector import MOTION_DIM, RIG_VERSION

CONTROL_DIM = len(CONTROL_NAMES)  # 2 gaze + 1 head distance + 4 emotion intensities


@dataclass(frozen=True)
class GeneratorConfig:
    """Shapes, sampler and training settings of the audio → motion generator.

    ``window`` (W) new frames per call, ``lookahead`` (L) frames of future audio, ``cache`` (K)
    past motion frames, ``audio_context`` (A) past frames of audio the encoder sees. The audio
    the encoder sees for a window starting at frame s covers frames [s − A, s + W + L).
    """

    window: int = 2
    lookahead: int = 2
    cache: int = 8
    audio_context: int = 8
    d_model: int = 64
    n_layers: int = 3
    n_heads: int = 4
    ff_mult: int = 2
    teacher_steps: int = 32
    student_steps: int = 2
    cfg_scale: float = 1.5
    cond_drop: float = 0.15  # classifier-free guidance: audio dropped this often in training
    past_noise: float = 0.1  # max std (normalised units) of noise added to the cache in training
    past_noise_mouth: float = 0.2  # the same for the cache's mouth dims (see MOUTH_DIMS)
    # False: the model does not see the cache's mouth dims at all (they read as the corpus
    # mean). The labels anticipate a closure (coarticulation), so a cache of labels tells the
    # future beyond the audio's lookahead; trained on it, the model closed on every bilabial
    # when fed labels and missed 16 % when fed its own frames (docs/generator.md, rev. 5).
    mouth_cache: bool = False
    # Causal per-stream feature normalisation (engines/motion/feature_norm.py): the corpus's
    # per-band speech mean, or empty for none (models before revision 6).
    norm_prior: tuple[float, ...] = ()
    prior: bool = True  # audio-only regression prior for the window; the flow adds a residual
    prior_weight: float = 1.0  # weight of the prior's MSE in the teacher's loss
    # Weight of an auxiliary frame-class head's cross-entropy in the teacher's loss (0 = no
    # head): every encoded audio frame also predicts speech / silence / bilabial closure, so
    # the encoder must find the closure in the audio itself rather than only through what the
    # motion loss rewards (issue 13). Training only; the student's graph does not use it.
    closure_head: float = 0.0
    fps: int = FPS
    n_mels: int = N_MELS
    mels_per_frame: int = MELS_PER_FRAME
    motion_dim: int = MOTION_DIM
    control_dim: int = CONTROL_DIM
    rig_version: str = RIG_VERSION

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if (isinstance(v, int) and not isinstance(v, bool)
                    and f.name not in ("cache", "lookahead") and v <= 0):
                raise ValueError(f"{f.name} must be positive, got {v}")
        for name in ("cache", "lookahead"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if self.window + self.lookahead > 4:
            raise ValueError(f"window + lookahead must be ≤ 4 frames (160 ms latency), got "
                             f"{self.window} + {self.lookahead}")
        if self.norm_prior and len(self.norm_prior) != self.n_mels:
            raise ValueError(f"norm_prior needs {self.n_mels} values, got {len(self.norm_prior)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must divide by n_heads ({self.n_heads})")
        if self.closure_head < 0.0:
            raise ValueError(f"closure_head must be ≥ 0, got {self.closure_head}")
        if not 0.0 <= self.cond_drop < 1.0:
            raise ValueError(f"cond_drop must be within 0..1, got {self.cond_drop}")
        if self.student_steps > 2 or self.teacher_steps < 32:
            raise ValueError("teacher_steps must be ≥ 32 and student_steps ≤ 2 (issue 3)")

    @property
    def context_frames(self) -> int:
        """Video frames of audio features one window needs (A + W + L)."""
        return self.audio_context + self.window + self.lookahead

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorConfig:
        """Older checkpoints (before the prior) lack ``prior`` and ``past_noise_mouth``, those
        before revision 5 ``mouth_cache``: they load as what they were (no prior, uniform cache
        noise, the mouth seen in the cache)."""
        d = dict(d)
        d.setdefault("mouth_cache", True)
        d["norm_prior"] = tuple(float(v) for v in d.get("norm_prior", ()))
        if "prior" not in d:
            d["prior"] = False
            d.setdefault("past_noise_mouth", d.get("past_noise", 0.1))
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        return cls(**d)


MOUTH_DIMS = MOUTH_INDICES
"""Rig dims the audio determines: their cache copy is
noised harder in training so the model listens to the audio, not to its own past mouth."""

TINY = GeneratorConfig(d_model=32, n_layers=1, n_heads=2, cache=4, audio_context=4)
