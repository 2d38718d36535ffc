"""The learned motion generator at run time: causal log-mel features + the distilled ONNX model.

Three pieces, top to bottom:

1. **Audio front end** (:func:`frame_log_mel`, :class:`LogMelStream`): log-mel at 100 Hz, four mel
   frames per 40 ms video frame, each mel frame computed from the 32 ms of audio that *ends* at
   its hop (causal). No whole-clip normalisation: a fixed affine maps log10 power to roughly
   −1..1, so a chunk's features never depend on audio that comes later. Training
   (``export/``) imports these same functions, so the model sees bit-identical features.
2. **Batched runner** (:class:`GeneratorRunner`): loads the ONNX student through its manifest
   (sha256 and rig version checked) and runs ``infer`` on a batch of windows, one per session.
3. **Per-session stream** (:class:`MotionGenerator`): a
:class:`vivify.engines.motion.driver.MotionDriver`.
   Audio of any chunk size goes in; whenever the audio for the next window of ``W`` frames plus
   ``L`` lookahead frames is there, a window request becomes ready. The split API
   (:meth:`MotionGenerator.ready_request` / :meth:`MotionGenerator.accept`) lets a scheduler put
   many sessions' windows into one ``infer`` call; :meth:`MotionGenerator.push` does the same for
   one session alone.

Streaming equivalence: features are computed per video frame from a fixed (4, 512) block of
samples (same shapes → same floating-point path whatever the chunking), the window noise is
drawn from ``default_rng([seed, window_index])``, and windows start at the first frame not yet
emitted, so any chunking followed by ``flush()`` equals the offline path bit for bit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vivify.engines.audio.audio_io import SAMPLE_RATE, SAMPLES_PER_FRAME
from vivify.engines.avatar.model_store import sha256_file
from vivify.engines.motion.controls import Controls
from vivify.engines.motion.feature_norm import FeatureNorm
from vivify.engines.motion.vector import (
    EMOTIONS,
    INDEX,
    MOTION_DIM,
    RIG_VERSION,
    clip_motion,
    rest_motion,
)

if TYPE_CHECKING:
    from vivify.engines.runtimes import Runner

# --- Audio front end (all sizes in samples at 16 kHz unless stated) --------------------------
MEL_HOP = 160  # 10 ms: 100 feature frames per second
MEL_WINDOW = 512  # 32 ms Hann window ending at the hop's end (causal)
N_MELS = 40  # mel bands; enough to see formants F1/F2 and fricative noise
MEL_FMIN_HZ = 60.0
MEL_FMAX_HZ = 7600.0
MELS_PER_FRAME = SAMPLES_PER_FRAME // MEL_HOP  # 4 mel frames per 40 ms video frame
LOG_FLOOR = 1e-10  # power floor (−100 dB) so digital silence has a finite log
LOG_OFFSET = 5.0  # log10 power + offset, / scale: fixed, never measured on the clip
LOG_SCALE = 3.0
FRAME_CONTEXT_SAMPLES = MEL_WINDOW - MEL_HOP  # 352 past samples one video frame's features need


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank() -> np.ndarray:
    """(MEL_WINDOW // 2 + 1, N_MELS) triangular HTK-mel filters, each normalised to unit area
    so a band's value is a mean power density, comparable across bands."""
    freqs = np.fft.rfftfreq(MEL_WINDOW, 1.0 / SAMPLE_RATE)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(MEL_FMIN_HZ)),
                                   _hz_to_mel(np.array(MEL_FMAX_HZ)), N_MELS + 2))
    fb = np.zeros((freqs.size, N_MELS), dtype=np.float64)
    for m in range(N_MELS):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        fb[:, m] = np.maximum(0.0, np.minimum(up, down))
        fb[:, m] /= max(fb[:, m].sum(), 1e-12)
    return fb.astype(np.float32)


_FB = mel_filterbank()
_WINDOW = np.hanning(MEL_WINDOW + 1)[:-1].astype(np.float32)  # periodic Hann
_POWER_SCALE = np.float32(2.0 / (MEL_WINDOW * float(np.sum(_WINDOW.astype(np.float64) ** 2))))
_FRAME_OFFSETS = (np.arange(MELS_PER_FRAME)[:, None] * MEL_HOP
                  + np.arange(MEL_WINDOW)[None, :])  # (4, 512) indices into one frame's block


def frame_log_mel(block: np.ndarray) -> np.ndarray:
    """Features of ONE video frame: (MELS_PER_FRAME, N_MELS) float32.

    ``block`` holds the ``FRAME_CONTEXT_SAMPLES + SAMPLES_PER_FRAME`` (992) samples that end at
    the frame's end. Always called with this exact shape, so numpy takes the same code path
    and streaming output is bit-identical to offline output.
    """
    if block.shape != (FRAME_CONTEXT_SAMPLES + SAMPLES_PER_FRAME,):
        raise ValueError(f"frame_log_mel needs {FRAME_CONTEXT_SAMPLES + SAMPLES_PER_FRAME} "
                         f"samples, got {block.shape}")
    frames = block.astype(np.float32, copy=False)[_FRAME_OFFSETS] * _WINDOW  # (4, 512)
    power = np.abs(np.fft.rfft(frames, axis=1)).astype(np.float32) ** 2 * _POWER_SCALE  # (4, 257)
    mel = power @ _FB  # (4, N_MELS)
    return ((np.log10(np.maximum(mel, LOG_FLOOR)) + LOG_OFFSET) / LOG_SCALE).astype(np.float32)


def log_mel_frames(audio: np.ndarray, n_frames: int | None = None) -> np.ndarray:
    """Offline: (n_frames, MELS_PER_FRAME, N_MELS) features of 16 kHz mono ``audio``, frame ``v``
    seeing only samples before ``(v + 1) * 640``. Audio is zero-padded to whole frames."""
    x = np.asarray(audio, dtype=np.float32)
    if n_frames is None:
        n_frames = -(-x.size // SAMPLES_PER_FRAME)
    padded = np.zeros(FRAME_CONTEXT_SAMPLES + n_frames * SAMPLES_PER_FRAME, dtype=np.float32)
    n = min(x.size, n_frames * SAMPLES_PER_FRAME)
    padded[FRAME_CONTEXT_SAMPLES:FRAME_CONTEXT_SAMPLES + n] = x[:n]
    out = np.empty((n_frames, MELS_PER_FRAME, N_MELS), dtype=np.float32)
    span = FRAME_CONTEXT_SAMPLES + SAMPLES_PER_FRAME
    for v in range(n_frames):
        start = v * SAMPLES_PER_FRAME
        out[v] = frame_log_mel(padded[start:start + span])
    return out


def silence_features() -> np.ndarray:
    """(MELS_PER_FRAME, N_MELS) features of digital silence (the floor)."""
    value = (math.log10(LOG_FLOOR) + LOG_OFFSET) / LOG_SCALE
    return np.full((MELS_PER_FRAME, N_MELS), value, dtype=np.float32)


MOUTH_INDICES = tuple(INDEX[n] for n in ("jaw_open", "lip_stretch", "lip_round",
                                         "upper_lip_raise", "lower_lip_depress", "lip_press"))

# --- Model artifact ---------------------------------------------------------------------------

# Package data (``vivify.models``). ONNX Runtime opens files by path, and the package is always
# installed unpacked (a wheel or an editable checkout), so the resource is a real directory.
MODELS_DIR = Path(str(resources.files("vivify.models")))
DEFAULT_MANIFEST = MODELS_DIR / "motion_generator.json"
INPUT_NAMES = ("mel", "past", "controls", "noise")
OUTPUT_NAME = "motion"
CONTROL_NAMES = ("gaze_x", "gaze_y", "distance", "emotion_happy", "emotion_sad",
                 "emotion_surprised", "emotion_angry")


class ManifestError(ValueError):
    """The model file does not match its manifest (missing, wrong sha256 or rig version)."""


@dataclass(frozen=True)
class GeneratorSpec:
    """The shapes a generator artifact was built for (read from its manifest's config)."""

    window: int  # W new frames per call
    lookahead: int  # L future frames of audio
    cache: int  # K past motion frames
    audio_context: int  # A past frames of audio features
    motion_dim: int
    control_dim: int
    n_mels: int
    mels_per_frame: int
    norm_prior: tuple[float, ...] = ()  # feature normalisation's prior; () for none

    @property
    def context_frames(self) -> int:
        return self.audio_context + self.window + self.lookahead

    @classmethod
    def from_config(cls, config: dict) -> GeneratorSpec:
        try:
            spec = cls(**{f: int(config[f]) for f in cls.__dataclass_fields__
                          if f != "norm_prior"},
                       norm_prior=tuple(float(v) for v in config.get("norm_prior", ())))
        except KeyError as exc:
            raise ManifestError(f"manifest config lacks field {exc.args[0]!r}") from exc
        if spec.norm_prior and (len(spec.norm_prior) != N_MELS
                                or not all(math.isfinite(v) for v in spec.norm_prior)):
            raise ManifestError(f"manifest norm_prior must be {N_MELS} finite numbers")
        if spec.motion_dim != MOTION_DIM:
            raise ManifestError(f"model makes {spec.motion_dim}-dim motion, rig has {MOTION_DIM}")
        if spec.n_mels != N_MELS or spec.mels_per_frame != MELS_PER_FRAME:
            raise ManifestError("model was trained on other audio features "
                                f"({spec.n_mels} mels × {spec.mels_per_frame} per frame)")
        if spec.control_dim != len(CONTROL_NAMES):
            raise ManifestError(f"model takes {spec.control_dim} controls, runtime has "
                                f"{len(CONTROL_NAMES)}")
        return spec


def load_manifest(path: Path | str = DEFAULT_MANIFEST) -> dict:
    """Read and check a manifest: the file exists, its sha256 and the rig version match."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"no generator manifest at {path} (make export writes one)")
    manifest = json.loads(path.read_text())
    model = path.parent / manifest["file"]
    if not model.is_file():
        raise ManifestError(f"model file {model} named by {path} is missing")
    digest = sha256_file(model)
    if digest != manifest["sha256"]:
        raise ManifestError(f"{model} has sha256 {digest}, manifest says {manifest['sha256']}")
    if manifest.get("rig_version") != RIG_VERSION:
        raise ManifestError(f"{model} was made for rig {manifest.get('rig_version')!r}, "
                            f"this rig is {RIG_VERSION!r}")
    return manifest


class Calibration:
    """Monotone maps of some motion dims, from the manifest's ``calibration`` (made by
    ``vivify.export.calibrate``: the model's free-running output distribution mapped onto the
    labels', undoing regression to the mean); applied to the frames shown, not the cache."""

    def __init__(self, knots: dict[str, list[list[float]]] | None = None) -> None:
        self.maps: list[tuple[int, np.ndarray, np.ndarray]] = []
        for name, (xp, fp) in (knots or {}).items():
            if name not in INDEX:
                raise ManifestError(f"calibration names an unknown motion dim {name!r}")
            x, f = np.asarray(xp, np.float64), np.asarray(fp, np.float64)
            if x.shape != f.shape or x.ndim != 1 or x.size < 2 or np.any(np.diff(x) <= 0):
                raise ManifestError(f"calibration of {name!r} is not a monotone map")
            self.maps.append((INDEX[name], x, f))

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if not self.maps:
            return frames
        out = frames.copy()
        for d, x, f in self.maps:
            out[:, d] = np.interp(frames[:, d], x, f).astype(np.float32)
        return out


def noise_scale(sampling: dict) -> np.ndarray:
    """(MOTION_DIM,) factors on the noise a window draws, from the manifest's ``sampling``:
    ``mouth_noise`` scales the mouth dims' noise (a lower sampling temperature where the audio
    should decide; blinks, sway and gaze keep theirs), ``press_noise`` the lip press's own
    (default: the mouth's). 1 everywhere when absent."""
    scale = np.ones(MOTION_DIM, np.float32)
    mouth = float(sampling.get("mouth_noise", 1.0))
    press = float(sampling.get("press_noise", mouth))
    for name, value in (("mouth_noise", mouth), ("press_noise", press)):
        if not 0.0 <= value <= 1.0:
            raise ManifestError(f"sampling.{name} must be within 0..1, got {value}")
    scale[list(MOUTH_INDICES)] = mouth
    scale[INDEX["lip_press"]] = press
    return scale


def noise_memory(sampling: dict) -> float:
    """The manifest's ``sampling.noise_memory`` ρ (0..0.99; 0, independent draws, when absent):
    how much of a window's mouth noise carries over to the next (see :func:`window_request`)."""
    rho = float(sampling.get("noise_memory", 0.0))
    if not 0.0 <= rho < 1.0:
        raise ManifestError(f"sampling.noise_memory must be within 0..1 (exclusive), got {rho}")
    return rho


class GeneratorRunner:
    """The student ONNX graph on a runtime from :mod:`vivify.engines.runtimes`, shared by every
    session.

    ``infer`` takes a batch of windows (any batch size: the graph's batch axis is dynamic), so
    a scheduler can serve many sessions with one call. One intra-op thread by default: on a
    busy server sessions scale across cores by batching, not by threads inside one call.
    ``runtime`` is ``ort-cpu`` (the default, as before), ``auto`` or any name in
    :data:`vivify.engines.runtimes.RUNTIMES`; or pass a ready ``runner`` (activated here).
    """

    def __init__(self, manifest: Path | str = DEFAULT_MANIFEST, threads: int = 1,
                 runtime: str = "ort-cpu", runner: Runner | None = None) -> None:
        from vivify.engines.runtimes import ModelManifest, create_runner

        self.manifest_path = Path(manifest)
        self.manifest = load_manifest(self.manifest_path)
        self.spec = GeneratorSpec.from_config(self.manifest["config"])
        self.calibration = Calibration(self.manifest.get("calibration", {}).get("knots"))
        self.noise_scale = noise_scale(self.manifest.get("sampling", {}))
        self.noise_memory = noise_memory(self.manifest.get("sampling", {}))
        if runner is None:
            model = ModelManifest.load(self.manifest_path, verify=False)  # checked just above
            if model.input_names != INPUT_NAMES:
                raise ManifestError(f"model inputs are {model.input_names}, "
                                    f"expected {INPUT_NAMES}")
            runner = create_runner(model, runtime, threads=threads)
        self.runner = runner
        self.runner.activate()

    @property
    def session(self) -> Any:
        """The ONNX Runtime session when the runner is one (kept for older callers)."""
        return getattr(self.runner, "session", None)

    def infer(self, mel: np.ndarray, past: np.ndarray, controls: np.ndarray,
              noise: np.ndarray) -> np.ndarray:
        """(B, 4T, N_MELS), (B, K, M), (B, C), (B, W, M) → (B, W, M) raw motion (unclipped)."""
        feeds = {"mel": mel, "past": past, "controls": controls, "noise": noise}
        out = self.runner.infer({k: np.ascontiguousarray(v, dtype=np.float32)
                                 for k, v in feeds.items()})
        return np.asarray(out[OUTPUT_NAME], dtype=np.float32)

    def infer_requests(self, requests: Sequence[WindowRequest]) -> list[np.ndarray]:
        """Many sessions' ready windows in one call; results in the same order."""
        if not requests:
            return []
        out = self.infer(np.stack([r.mel for r in requests]),
                         np.stack([r.past for r in requests]),
                         np.stack([r.controls for r in requests]),
                         np.stack([r.noise for r in requests]))
        return list(out)


@dataclass(frozen=True)
class WindowRequest:
    """One session's ready window: the model inputs without the batch axis."""

    mel: np.ndarray  # (4T, N_MELS)
    past: np.ndarray  # (K, M)
    controls: np.ndarray  # (C,)
    noise: np.ndarray  # (W, M)
    start_frame: int
    window_index: int
    draw: np.ndarray | None = None  # (W, M) the unscaled draw: the next window's ``previous``


def window_request(runner: GeneratorRunner, feature: Callable[[int], np.ndarray], start: int,
                   index: int, cache: np.ndarray, controls: np.ndarray, seed: int,
                   previous: np.ndarray | None = None) -> WindowRequest:
    """Window ``index`` (first frame ``start``) of a stream: the features of frames
    [start − A, start + W + L) from ``feature(frame)``, the cache, and the stream's noise draw
    for that window (seeded by (seed, index), scaled by the manifest's sampling). With the
    sampling's ``noise_memory`` ρ the mouth dims' draw continues the ``previous`` window's
    draw (ρ·previous + √(1 − ρ²)·new): each window still draws from the model's whole
    distribution, but a sustained vowel no longer jumps between draws frame to frame. The one
    place a window's inputs are made: the live session and the calibration's free run
    (export/calibrate.py) must feed the model alike."""
    spec = runner.spec
    rows = [feature(v) for v in range(start - spec.audio_context,
                                      start + spec.window + spec.lookahead)]
    draw = np.random.default_rng([seed, index]).standard_normal(
        (spec.window, spec.motion_dim)).astype(np.float32)
    rho = runner.noise_memory
    if rho and previous is not None:  # the mouth's draws as an AR(1) chain: unit variance
        mouth, last = list(MOUTH_INDICES), previous[-1]
        fresh = np.float32(math.sqrt(1.0 - rho * rho))
        for i in range(spec.window):
            draw[i, mouth] = rho * last[mouth] + fresh * draw[i, mouth]
            last = draw[i]
    return WindowRequest(mel=np.concatenate(rows, dtype=np.float32), past=cache.copy(),
                         controls=np.asarray(controls, np.float32).copy(),
                         noise=draw * runner.noise_scale, start_frame=start, window_index=index,
                         draw=draw)


def control_vector(gaze: tuple[float, float] = (0.0, 0.0), distance: float = 0.0,
                   emotion: str = "neutral", intensity: float = 1.0) -> np.ndarray:
    """The model's control input: gaze x/y and head distance in motion units (−1..1), and an
    emotion preset's intensity (0..1); ``neutral`` sets no emotion."""
    vec = np.zeros(len(CONTROL_NAMES), dtype=np.float32)
    vec[0], vec[1], vec[2] = gaze[0], gaze[1], distance
    if emotion not in EMOTIONS:
        raise ValueError(f"unknown emotion {emotion!r}; known: {', '.join(EMOTIONS)}")
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"emotion intensity must be within 0..1, got {intensity}")
    if emotion != "neutral":
        vec[CONTROL_NAMES.index(f"emotion_{emotion}")] = intensity
    if not np.all(np.abs(vec[:3]) <= 1.0):
        raise ValueError(f"gaze and distance must be within −1..1, got {vec[:3]}")
    return vec


def control_input(controls: Controls) -> np.ndarray:
    """A session's controls as the model's control input (clamped, so always valid)."""
    c = controls.clamped()
    return control_vector(c.gaze, c.distance, c.emotion, c.intensity)


# --- Per-session streaming state --------------------------------------------------------------

_EMPTY = np.zeros((0, MOTION_DIM), dtype=np.float32)


class MotionGenerator:
    """Streaming audio → motion with the learned generator; one per session (not thread-safe).

    Timeline: absolute sample 0 starts frame 0; before it lies silence. A window of ``W``
    frames starting at frame ``s`` (the first frame not yet emitted) is ready once audio up to
    the end of frame ``s + W + L − 1`` has arrived; it is conditioned on the last ``K`` emitted
    frames (the motion-frame cache; rest pose at the start) and the audio features of frames
    ``[s − A, s + W + L)`` (silence features before frame 0).
    """

    def __init__(self, runner: GeneratorRunner, seed: int = 0,
                 controls: np.ndarray | None = None) -> None:
        self.runner = runner
        self.spec = runner.spec
        self.seed = seed
        self.controls = (control_vector() if controls is None
                         else np.asarray(controls, dtype=np.float32).copy())
        if self.controls.shape != (self.spec.control_dim,):
            raise ValueError(f"controls must have shape ({self.spec.control_dim},)")
        self._silence = silence_features()
        self._norm = FeatureNorm(self.spec.norm_prior) if self.spec.norm_prior else None
        self._norm_states: list[np.ndarray] = []  # the normaliser's state before each feature
        self._cache = np.tile(rest_motion(), (self.spec.cache, 1))  # (K, M)
        # audio: self._audio holds absolute samples [self._audio_start, ...)
        self._audio = np.zeros(FRAME_CONTEXT_SAMPLES, dtype=np.float32)
        self._audio_start = -FRAME_CONTEXT_SAMPLES
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        # features: self._feats[i] belongs to frame self._feat_base + i
        self._feats: list[np.ndarray] = []
        self._feat_base = 0
        self._frames = 0
        self._windows = 0
        self._draw: np.ndarray | None = None  # the last window's noise draw (noise_memory)
        self._next_draw: np.ndarray | None = None  # the pending request's
        self._limit: int | None = None  # during flush: emit no frame at or beyond this

    # -- MotionDriver protocol --

    def set_controls(self, controls: Controls) -> None:
        """The model takes the controls as input and follows them itself: windows requested
        from now on carry them (nothing is added to its motion)."""
        self.controls = control_input(controls)

    @property
    def latency_samples(self) -> int:
        """Audio that must follow a window's first frame's start before it can be shown:
        (W + L) frames, the algorithmic latency."""
        return (self.spec.window + self.spec.lookahead) * SAMPLES_PER_FRAME

    @property
    def frames_emitted(self) -> int:
        return self._frames

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Add audio of any length; return the (n, MOTION_DIM) frames that became ready."""
        self.add_audio(chunk)
        return self._run_ready()

    def flush(self) -> np.ndarray:
        """End of segment: pad with silence, emit every frame that holds pushed audio
        (ceil(samples / 640)); the next push starts a new segment at the next frame."""
        self._consolidate()
        end = self._audio_start + self._audio.size
        n_total = -(-end // SAMPLES_PER_FRAME)
        if n_total <= self._frames:
            return _EMPTY.copy()
        need = (n_total - 1 + self.spec.window + self.spec.lookahead) * SAMPLES_PER_FRAME
        self._audio = np.concatenate([self._audio, np.zeros(max(0, need - end), np.float32)])
        self._limit = n_total
        try:
            frames = self._run_ready()
        finally:
            self._limit = None
        self._truncate(self._frames * SAMPLES_PER_FRAME)
        return frames

    def clear(self) -> None:
        """Interruption: drop audio not yet shown, and forget the speech already heard.

        The encoder's past context (A frames) would otherwise still hold the interrupted
        sentence, and the mouth kept speaking for up to two frames after it (measured on the
        shipped model); the session had also made frames ahead of playback whose audio is
        never heard. So the context becomes silence: the next frame is the face at rest. The
        cache keeps the last shown frames, so head, blinks and gaze continue without a jump.
        """
        self._consolidate()
        self._truncate(self._frames * SAMPLES_PER_FRAME)
        self._audio[:] = 0.0
        quiet = self._norm.shift(self._silence) if self._norm else self._silence
        self._feats = [quiet] * len(self._feats)

    def drive(self, audio: np.ndarray) -> np.ndarray:
        """Offline: ``push(audio)`` then ``flush()`` — the reference for any chunking."""
        return np.concatenate([self.push(audio), self.flush()])

    # -- split API for a batching scheduler --

    def add_audio(self, chunk: np.ndarray) -> None:
        """Queue audio without running the model (the scheduler calls ``ready_request``)."""
        if np.ndim(chunk) != 1:
            raise ValueError(f"push() takes mono audio of shape (n,), got {np.shape(chunk)}")
        x = np.asarray(chunk, dtype=np.float32)
        if x.size == 0:
            return
        if not np.isfinite(x).all():
            x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
        self._pending.append(x)
        self._pending_len += x.size

    def ready_request(self) -> WindowRequest | None:
        """The next window's model inputs if its audio is there, else None. Idempotent: it
        does not advance until :meth:`accept` is given the result."""
        self._consolidate()
        s, spec = self._frames, self.spec
        if self._limit is not None and s >= self._limit:
            return None
        end_frame = s + spec.window + spec.lookahead  # exclusive
        if self._audio_start + self._audio.size < end_frame * SAMPLES_PER_FRAME:
            return None
        self._compute_features(end_frame)
        req = window_request(self.runner, self._feature, s, self._windows, self._cache,
                             self.controls, self.seed, self._draw)
        self._next_draw = req.draw
        return req

    def accept(self, window: np.ndarray) -> np.ndarray:
        """Take the model's (W, M) output for the pending request; return the frames shown."""
        spec = self.spec
        if window.shape != (spec.window, spec.motion_dim):
            raise ValueError(f"window must have shape ({spec.window}, {spec.motion_dim})")
        n = spec.window if self._limit is None else min(spec.window, self._limit - self._frames)
        frames = clip_motion(np.asarray(window[:n], dtype=np.float32))
        if spec.cache:  # the model's own frames: the dynamics the calibration was fitted on
            self._cache = np.concatenate([self._cache, frames])[-spec.cache:]
        self._frames += n
        self._windows += 1
        self._draw = self._next_draw
        self._drop_old_features()
        return clip_motion(self.runner.calibration(frames))

    # -- internals --

    def _run_ready(self) -> np.ndarray:
        out = []
        while (req := self.ready_request()) is not None:
            out.append(self.accept(self.runner.infer_requests([req])[0]))
        return np.concatenate(out) if out else _EMPTY.copy()

    def _consolidate(self) -> None:
        if self._pending:
            self._audio = np.concatenate([self._audio, *self._pending])
            self._pending, self._pending_len = [], 0

    def _feature(self, frame: int) -> np.ndarray:
        if frame < 0:
            return self._silence
        return self._feats[frame - self._feat_base]

    def _compute_features(self, end_frame: int) -> None:
        span = FRAME_CONTEXT_SAMPLES + SAMPLES_PER_FRAME
        while self._feat_base + len(self._feats) < end_frame:
            v = self._feat_base + len(self._feats)
            lo = v * SAMPLES_PER_FRAME - FRAME_CONTEXT_SAMPLES - self._audio_start
            feats = frame_log_mel(self._audio[lo:lo + span])
            if self._norm is not None:
                self._norm_states.append(self._norm.state)
                feats = self._norm(feats)
            self._feats.append(feats)

    def _drop_old_features(self) -> None:
        keep_from = self._frames - self.spec.audio_context
        cut = max(0, min(keep_from - self._feat_base, len(self._feats)))
        if cut:
            del self._feats[:cut]
            del self._norm_states[:cut]
            self._feat_base += cut
        # audio before the context of the first frame whose features are not computed yet
        first = self._feat_base + len(self._feats)
        a_cut = first * SAMPLES_PER_FRAME - FRAME_CONTEXT_SAMPLES - self._audio_start
        a_cut = min(a_cut, self._frames * SAMPLES_PER_FRAME - FRAME_CONTEXT_SAMPLES
                    - self._audio_start)
        if a_cut > 0:
            self._audio = self._audio[a_cut:]
            self._audio_start += a_cut

    def _truncate(self, end: int) -> None:
        """Drop audio at and after absolute sample ``end`` and features that used it."""
        self._audio = self._audio[: max(0, end - self._audio_start)].copy()
        first_bad = end // SAMPLES_PER_FRAME  # frames ≥ this saw audio past ``end``
        keep = max(0, first_bad - self._feat_base)
        if self._norm is not None and keep < len(self._norm_states):
            self._norm.restore(self._norm_states[keep])  # as before the dropped frames
        del self._feats[keep:]
        del self._norm_states[keep:]
