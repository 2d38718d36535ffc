"""Invisible watermark on every generated frame, and its detector.

Why it is built this way (measurements in docs/watermark.md):

- **What is embedded.** A keyed pseudo-random ±1 pattern of 4×4-pixel cells, tiled with a
  period of 128 px over the whole frame, smoothed and added to luma (the same integer to R, G
  and B) at 1.9 levels RMS (PSNR 42.5 dB). Half of the cells of a tile are *sync* cells
  (known to every detector); the other half carry the 48 coded payload bits, each bit flipping
  the sign of its ~10 scattered cells.
- **Coarse cells in luma** survive what kills fine detail: chroma subsampling, JPEG/H.264/VP8
  quantisation (a cell is as big as a 4×4 transform block) and downscaling to half (a cell is
  then still 2 px).
- **Constant in time.** Every frame carries the same pattern, so a video codec's inter
  prediction keeps it for free (a pattern that changed per frame would cost a residual every
  frame and is the first thing a low bit rate drops), and the detector can simply add frames:
  host content changes, the mark does not, so the evidence accumulates over time.
- **Tiled periodically** so the detector folds the frame onto one tile and finds the offset by
  circular cross-correlation (FFT): crops and shifts cost nothing but lost area.
- **Scale search after accumulation.** Folding is linear, so the detector sums high-passed
  frames at the received resolution and folds the sum once per candidate scale at the end
  (sparse matrices, ~1 ms per scale). That makes a dense scale grid (resizes from 0.4× to 1.3×,
  screen recordings) affordable without paying per frame.
- **Embedding is two saturating SIMD adds** (``cv2.add``/``cv2.subtract`` of a precomputed
  positive and negative part): ~0.1 ms per 512² frame, no per-frame allocation beyond the copy.
- **Payload trust.** 8-bit product tag + 32-bit session hash + CRC-8; a payload is reported
  only when the CRC and the tag both check (16 check bits), on top of the presence test.
- **False positives** are bounded by the detection statistic: the peak of the normalised
  correlation over all shifts and scales, compared with a threshold whose Gaussian tail times
  the number of tests is ≤ 2e-6 (see :data:`DETECTION_Z`). The null was also measured on
  unmarked renders and camera-like clips over many keys (docs/watermark.md): its maxima are
  Gumbel-like around 4.7 ± 0.26, so 7.0 sits ~9 Gumbel widths out (≈ 1e-5 per clip).

The pattern is derived from the key with SHAKE-256 only (no numpy RNG), so a file marked by
one version of this code verifies with any later version.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

# --- pattern geometry (pixels of the generated frame) ---
CELL_PX = 4  # side of one pattern cell; ≥ a 4×4 codec transform block, still 2 px at half size
TILE_CELLS = 32  # tile side in cells
TILE_PX = CELL_PX * TILE_CELLS  # 128 px: the pattern's period (smaller frames hold part)
SYNC_FRACTION = 0.5  # share of a tile's cells that carry the known sync pattern
SMOOTH_SIGMA_PX = 1.0  # Gaussian smoothing of the cell edges (energy codecs would drop anyway)
TARGET_PSNR_DB = 42.5  # the rounded tile's RMS is 255/10^(42.5/20) ≈ 1.9 levels (spec: ≥ 42 dB)
MAX_DELTA = 5  # luma levels: hard cap of the per-pixel change

# --- payload ---
PRODUCT_KEY = b"vivify-watermark-v1"  # seeds the pattern; a different key is a different mark
PRODUCT_TAG = 0x56  # 'V': first 8 payload bits, checked on decode like a second CRC
TAG_BITS = 8
SESSION_BITS = 32
CRC_BITS = 8
CRC8_POLY = 0x07  # CRC-8/ATM (x^8 + x^2 + x + 1)
CODED_BITS = TAG_BITS + SESSION_BITS + CRC_BITS  # 48 bits spread over each tile
CHASE_BITS = 3  # on a CRC failure, also try flipping subsets of the 3 least reliable bits

# --- detector ---
ANALYSIS_PX = 2  # generated-frame pixels per analysis pixel: a cell is 2×2 analysis pixels
TILE_A = TILE_PX // ANALYSIS_PX  # 64: side of the folded tile the correlation runs on
HIGHPASS_SIGMA_PX = 2.0  # received pixels: y − blur(y) removes the host's low frequencies
RESIDUAL_CLIP = 1.0  # luma levels: near-sign correlation, edges and texture cannot outvote the mark
SCALE_MIN = 0.4  # smallest resize factor searched (received size / generated size)
SCALE_MAX = 1.3  # largest
SCALE_STEP_CELLS = 0.7  # scale grid step: the fold drifts ≤ this many cells across the frame
DETECTION_Z = 7.0  # peak z needed: Q(7)=1.3e-12 × ≤ 1.7e6 tests ⇒ FP ≤ 2e-6; measured: docs
MIN_SIDE_PX = 64  # received frames smaller than this cannot be folded onto a tile
DECIMATE_MIN_SIDE_PX = 1024  # frames at least this big are halved first (cells stay ≥ 2 px)
MAX_ANALYSIS_SIDE_PX = 640  # then cropped to a central window: bounded time, crops are free
DEFAULT_MAX_FRAMES = 150  # detectors stop accumulating after this (6 s at 25 fps)


def _shake(key: bytes, label: bytes, n: int) -> np.ndarray:
    """``n`` deterministic bytes for ``label`` under ``key`` (stable across numpy versions)."""
    return np.frombuffer(hashlib.shake_256(key + b"\x00" + label).digest(n), dtype=np.uint8)


def crc8(bits: np.ndarray) -> int:
    """CRC-8/ATM of a bit sequence (MSB first), computed bitwise: 40 bits, no table needed."""
    crc = 0
    for b in bits.astype(int):
        top = ((crc >> 7) & 1) ^ int(b)
        crc = (crc << 1) & 0xFF
        if top:
            crc ^= CRC8_POLY
    return crc


def _int_bits(value: int, n: int) -> np.ndarray:
    return np.array([(value >> (n - 1 - i)) & 1 for i in range(n)], dtype=np.uint8)


def _bits_int(bits: np.ndarray) -> int:
    out = 0
    for b in bits.astype(int):
        out = (out << 1) | int(b)
    return out


@dataclass(frozen=True)
class WatermarkPayload:
    """What a mark says: the product tag and a 32-bit hash of the session id.

    The session id itself never leaves the server; the hash lets an operator match a clip to
    their session log without the mark disclosing anything about the viewer.
    """

    session: int
    tag: int = PRODUCT_TAG

    def __post_init__(self) -> None:
        if not 0 <= self.session < 1 << SESSION_BITS:
            raise ValueError(f"session: must fit in {SESSION_BITS} bits, got {self.session}")
        if not 0 <= self.tag < 1 << TAG_BITS:
            raise ValueError(f"tag: must fit in {TAG_BITS} bits, got {self.tag}")

    @property
    def session_hex(self) -> str:
        return f"{self.session:08x}"

    def to_bits(self) -> np.ndarray:
        """The 48 coded bits: tag, session, CRC-8 of both."""
        data = np.concatenate([_int_bits(self.tag, TAG_BITS),
                               _int_bits(self.session, SESSION_BITS)])
        return np.concatenate([data, _int_bits(crc8(data), CRC_BITS)])

    @classmethod
    def from_bits(cls, bits: np.ndarray) -> WatermarkPayload | None:
        """Decode 48 bits; ``None`` unless the CRC checks."""
        data, crc = bits[: TAG_BITS + SESSION_BITS], bits[TAG_BITS + SESSION_BITS:]
        if crc8(data) != _bits_int(crc):
            return None
        return cls(session=_bits_int(data[TAG_BITS:]), tag=_bits_int(data[:TAG_BITS]))

    @classmethod
    def from_bytes(cls, raw: bytes) -> WatermarkPayload:
        """4 bytes: the session hash; 5 bytes: tag then session hash."""
        if len(raw) == 4:
            return cls(session=int.from_bytes(raw, "big"))
        if len(raw) == 5:
            return cls(session=int.from_bytes(raw[1:], "big"), tag=raw[0])
        raise ValueError(f"payload: expected 4 or 5 bytes, got {len(raw)}")


def session_payload(session_id: str) -> WatermarkPayload:
    """The payload for a session: SHA-256 of the id, first 32 bits."""
    digest = hashlib.sha256(session_id.encode("utf-8")).digest()
    return WatermarkPayload(session=int.from_bytes(digest[:4], "big"))


@dataclass(frozen=True)
class _Layout:
    """Where sync and payload cells sit in a tile, and their chip signs; derived from the key."""

    pn: np.ndarray  # (TILE_CELLS, TILE_CELLS) float32 ±1
    role: np.ndarray  # (TILE_CELLS, TILE_CELLS) int: -1 sync, else the payload bit index

    @classmethod
    def from_key(cls, key: bytes) -> _Layout:
        n = TILE_CELLS * TILE_CELLS
        pn = (_shake(key, b"pn", n) & 1).astype(np.float32) * 2 - 1
        order = np.argsort(_shake(key, b"perm", 4 * n).view(">u4"), kind="stable")
        n_sync = round(SYNC_FRACTION * n)
        role = np.full(n, -1, dtype=np.int64)
        role[order[n_sync:]] = np.arange(n - n_sync) % CODED_BITS
        return cls(pn.reshape(TILE_CELLS, TILE_CELLS), role.reshape(TILE_CELLS, TILE_CELLS))

    def cells(self, bits: np.ndarray | None) -> np.ndarray:
        """Cell values: sync chips, plus payload chips signed by ``bits`` (zero if None)."""
        signs = np.zeros(CODED_BITS + 1, dtype=np.float32)
        signs[-1] = 1.0  # index -1: sync
        if bits is not None:
            signs[:CODED_BITS] = bits.astype(np.float32) * 2 - 1
        return self.pn * signs[self.role]


def _smooth_tile(cells: np.ndarray, px_per_cell: int, sigma: float) -> np.ndarray:
    """Upsample cells to pixels and blur circularly (the tile repeats, so must the blur)."""
    tile = np.kron(cells, np.ones((px_per_cell, px_per_cell), dtype=np.float32))
    if sigma <= 0:
        return tile
    f = np.fft.fftfreq(tile.shape[0])
    g = np.exp(-2 * (math.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    return np.real(np.fft.ifft2(np.fft.fft2(tile) * g)).astype(np.float32)


def pattern_tile(payload: WatermarkPayload, key: bytes = PRODUCT_KEY) -> np.ndarray:
    """The (TILE_PX, TILE_PX) int8 luma offsets one tile of the mark adds.

    The gain is set on the *rounded* tile (bisection), so every payload lands just under the
    PSNR target instead of wherever rounding happens to push it.
    """
    layout = _Layout.from_key(key)
    tile = _smooth_tile(layout.cells(payload.to_bits()), CELL_PX, SMOOTH_SIGMA_PX)
    tile /= float(np.sqrt(np.mean(tile**2)))
    target_rms = 255.0 / 10 ** (TARGET_PSNR_DB / 20)

    def quantised(gain: float) -> np.ndarray:
        return np.clip(np.rint(gain * tile), -MAX_DELTA, MAX_DELTA)

    lo, hi = 0.5, 4.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if float(np.sqrt(np.mean(quantised(mid) ** 2))) <= target_rms:
            lo = mid
        else:
            hi = mid
    return quantised(lo).astype(np.int8)


class Watermarker:
    """Marks frames of one session: ``apply`` is two saturating adds of precomputed planes.

    The pattern is the same in every frame (see the module docstring for why); ``index`` is
    accepted so the call site does not change if a time-varying scheme is ever needed.
    """

    def __init__(self, payload: WatermarkPayload | bytes, key: bytes = PRODUCT_KEY) -> None:
        self.payload = (payload if isinstance(payload, WatermarkPayload)
                        else WatermarkPayload.from_bytes(payload))
        self.key = key
        self.tile = pattern_tile(self.payload, key)  # (128, 128) int8
        self._planes: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}

    def planes(self, height: int, width: int, channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """(positive, negative) uint8 offsets for a frame size, built once and cached."""
        shape = (height, width, channels)
        if shape not in self._planes:
            if len(self._planes) >= 4:  # a session uses one or two sizes; never grow unbounded
                self._planes.clear()
            reps = (-(-height // TILE_PX), -(-width // TILE_PX))
            full = np.tile(self.tile, reps)[:height, :width].astype(np.int16)
            pos = np.clip(full, 0, None).astype(np.uint8)
            neg = np.clip(-full, 0, None).astype(np.uint8)
            if channels > 1:
                pos = np.ascontiguousarray(np.repeat(pos[:, :, None], channels, axis=2))
                neg = np.ascontiguousarray(np.repeat(neg[:, :, None], channels, axis=2))
            self._planes[shape] = (pos, neg)
        return self._planes[shape]

    def apply(self, frame: np.ndarray, index: int = 0, *, inplace: bool = False) -> np.ndarray:
        """Return ``frame`` (H, W, 3) uint8 RGB with the mark added (in place if asked).

        Not in place by default: a caller may hold the frame (an idle frame shown again) and
        must not get it marked twice.
        """
        del index  # constant in time; see the class docstring
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
            raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
        h, w = frame.shape[:2]
        if min(h, w) < MIN_SIDE_PX:
            raise ValueError(f"frame too small to mark: {w}×{h} (min side {MIN_SIDE_PX} px)")
        pos, neg = self.planes(h, w, frame.shape[2] if frame.ndim == 3 else 1)
        if inplace and frame.flags.c_contiguous and frame.flags.writeable:
            out = cv2.add(frame, pos, dst=frame)
        else:
            out = cv2.add(frame, pos)
        return cv2.subtract(out, neg, dst=out)


@dataclass(frozen=True)
class Detection:
    """What a detector concluded from the frames it saw.

    ``confidence`` is 1 − (bound on the chance that unmarked video scores this high); ``score``
    is the peak z of the sync correlation; ``scale`` is received size / generated size.
    """

    present: bool
    confidence: float
    payload: WatermarkPayload | None
    frames: int
    score: float = 0.0
    scale: float = 0.0
    offset: tuple[int, int] = (0, 0)  # tile origin in received pixels (y, x)
    false_alarm: float = 1.0  # union bound on P(unmarked media scores ≥ score)


def _fold_matrix(n: int, period_px: float) -> Any:
    """(TILE_A, n) sparse linear-interpolation splat of n received pixels onto a circular tile.

    scipy is imported here, not at the top: embedding (every render) never needs it.
    """
    from scipy import sparse

    u = (np.arange(n) + 0.5) / period_px * TILE_A - 0.5
    i0 = np.floor(u)
    w1 = (u - i0).astype(np.float32)
    i0 = i0.astype(np.int64) % TILE_A
    rows = np.concatenate([i0, (i0 + 1) % TILE_A])
    cols = np.concatenate([np.arange(n), np.arange(n)])
    vals = np.concatenate([1 - w1, w1])
    return sparse.csr_matrix((vals, (rows, cols)), shape=(TILE_A, n))


def _scale_grid(height: int, width: int) -> np.ndarray:
    """Scales to try, densest where the frame spans the most cells (small drift tolerance)."""
    side = max(height, width)
    scales = []
    s = SCALE_MAX
    while s >= SCALE_MIN:
        scales.append(s)
        cells_across = side / (CELL_PX * s)
        s *= 1 - SCALE_STEP_CELLS / cells_across
    return np.array(scales)


def _highpass_template(tile_cells: np.ndarray) -> np.ndarray:
    """The analysis-resolution template the fold is correlated with (matched to the channel)."""
    t = _smooth_tile(tile_cells, CELL_PX // ANALYSIS_PX, SMOOTH_SIGMA_PX / ANALYSIS_PX)
    f = np.fft.fftfreq(TILE_A)
    sigma = HIGHPASS_SIGMA_PX / ANALYSIS_PX
    g = 1 - np.exp(-2 * (math.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    t = np.real(np.fft.ifft2(np.fft.fft2(t) * g))
    return (t - t.mean()).astype(np.float64)


def tail_bound(z: float, tests: float) -> float:
    """Union bound on P(max of ``tests`` standard normals ≥ z): the FP chance of a score."""
    return min(1.0, tests * 0.5 * math.erfc(z / math.sqrt(2)))


class WatermarkDetector:
    """Accumulates frames of one clip and says whether, and what, mark they carry.

    ``feed`` costs one colour conversion, a blur and an add per frame (~3 ms at 512²); the
    shift and scale search runs once in :meth:`result` (~0.2 s at 512²). Big frames are halved
    and cropped to a central window first, so time stays bounded for any input. Frames of a
    different size than the first are ignored (one clip has one size).
    """

    def __init__(self, key: bytes = PRODUCT_KEY, max_frames: int = DEFAULT_MAX_FRAMES) -> None:
        self.key = key
        self.max_frames = max_frames
        self._layout = _Layout.from_key(key)
        self._sync = _highpass_template(self._layout.cells(None))  # (TILE_A, TILE_A)
        bit_t = []
        for i in range(CODED_BITS):
            only = np.where(self._layout.role == i, self._layout.pn, 0).astype(np.float32)
            bit_t.append(_highpass_template(only).ravel())
        self._bits = np.stack(bit_t)  # (CODED_BITS, TILE_A²)
        self._acc: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None
        self._decimation = 1
        self.frames = 0

    def reset(self) -> None:
        self._acc = None
        self._shape = None
        self.frames = 0

    @property
    def full(self) -> bool:
        return self.frames >= self.max_frames

    def feed(self, frame: np.ndarray) -> None:
        """Add one frame: (H, W, 3) uint8 RGB, or (H, W) luma."""
        if self.full:
            return
        if frame.ndim == 3 and frame.shape[2] in (3, 4):
            code = cv2.COLOR_RGB2GRAY if frame.shape[2] == 3 else cv2.COLOR_RGBA2GRAY
            luma = cv2.cvtColor(np.ascontiguousarray(frame), code)
        elif frame.ndim == 2:
            luma = frame
        else:
            raise ValueError(f"expected an (H, W, 3) or (H, W) frame, got {frame.shape}")
        if min(luma.shape) < MIN_SIDE_PX:
            raise ValueError(f"frame too small to verify: {luma.shape[1]}×{luma.shape[0]} "
                             f"(min side {MIN_SIDE_PX} px)")
        if self._shape is None:
            self._shape = luma.shape
            self._decimation = 2 if min(luma.shape) >= DECIMATE_MIN_SIDE_PX else 1
        elif luma.shape != self._shape:
            return
        y: np.ndarray = luma.astype(np.float32)
        if self._decimation > 1:
            y = cv2.resize(y, (y.shape[1] // 2, y.shape[0] // 2), interpolation=cv2.INTER_AREA)
        h, w = y.shape
        top, left = max(0, (h - MAX_ANALYSIS_SIDE_PX) // 2), max(0, (w - MAX_ANALYSIS_SIDE_PX) // 2)
        y = y[top: top + MAX_ANALYSIS_SIDE_PX, left: left + MAX_ANALYSIS_SIDE_PX]
        r = y - cv2.GaussianBlur(y, (0, 0), HIGHPASS_SIGMA_PX)
        np.clip(r, -RESIDUAL_CLIP, RESIDUAL_CLIP, out=r)
        if self._acc is None:
            self._acc = r.astype(np.float64)
        else:
            self._acc += r
        self.frames += 1

    def folds(self) -> list[tuple[float, np.ndarray]]:
        """(scale, (TILE_A, TILE_A) fold) for every candidate scale of the accumulated frames.

        Scales are those of the analysed (possibly halved) frame. Exposed so a null study can
        correlate the same folds with many keys.
        """
        if self._acc is None:
            return []
        h, w = self._acc.shape
        acc = self._acc.astype(np.float32)
        out = []
        for s in _scale_grid(h, w):
            period = TILE_PX * s
            fy, fx = _fold_matrix(h, period), _fold_matrix(w, period)
            out.append((float(s), np.asarray((fx @ (fy @ acc).T).T, dtype=np.float64)))
        return out

    def result(self) -> Detection:
        """Search scales and shifts for the sync pattern; decode the payload where it is."""
        folds = self.folds()
        if not folds:
            return Detection(False, 0.0, None, 0)
        z, i, (dy, dx) = best_peak(folds, self._sync)
        s, fold = folds[i]
        tests = float(len(folds) * TILE_A * TILE_A)
        present = z >= DETECTION_Z
        payload = self._decode(np.roll(fold, (-dy, -dx), axis=(0, 1))) if present else None
        scale = s * self._decimation
        offset = (round(dy * ANALYSIS_PX * scale), round(dx * ANALYSIS_PX * scale))
        fa = tail_bound(z, tests)
        return Detection(present=present, confidence=1.0 - fa, payload=payload,
                         frames=self.frames, score=z, scale=scale, offset=offset, false_alarm=fa)

    def soft_bits(self, aligned_fold: np.ndarray) -> np.ndarray:
        """Per-bit correlations (sign = bit) of a fold already rolled to the tile origin."""
        return self._bits @ aligned_fold.ravel()

    def _decode(self, aligned_fold: np.ndarray) -> WatermarkPayload | None:
        """Hard decisions, then a small Chase search over the least reliable bits."""
        soft = self.soft_bits(aligned_fold)
        hard = (soft > 0).astype(np.uint8)
        weakest = np.argsort(np.abs(soft))[:CHASE_BITS]
        for m in range(1 << CHASE_BITS):
            bits = hard.copy()
            for j in range(CHASE_BITS):
                if m >> j & 1:
                    bits[weakest[j]] ^= 1
            got = WatermarkPayload.from_bits(bits)
            if got is not None and got.tag == PRODUCT_TAG:
                return got
        return None


def best_peak(folds: list[tuple[float, np.ndarray]],
              template: np.ndarray) -> tuple[float, int, tuple[int, int]]:
    """(z, fold index, (dy, dx)) of the highest normalised circular correlation peak.

    z is the peak's distance from the mean of its correlation surface in standard deviations
    of that surface: under no mark the surface is a sum of thousands of weakly dependent terms,
    so z is close to standard normal at each shift, which is what :func:`tail_bound` assumes.
    """
    spec = np.conj(np.fft.rfft2(template))
    best: tuple[float, int, tuple[int, int]] = (-np.inf, 0, (0, 0))
    for i, (_, fold) in enumerate(folds):
        corr = np.fft.irfft2(np.fft.rfft2(fold) * spec, s=fold.shape)
        sd = float(corr.std())
        if sd <= 0:
            continue
        k = int(np.argmax(corr))
        z = float((corr.flat[k] - corr.mean()) / sd)
        if z > best[0]:
            best = (z, i, (k // fold.shape[1], k % fold.shape[1]))
    if not np.isfinite(best[0]):
        return (0.0, 0, (0, 0))
    return best


def sync_template(key: bytes = PRODUCT_KEY) -> np.ndarray:
    """The (TILE_A, TILE_A) analysis template of a key's sync cells (for null studies)."""
    return _highpass_template(_Layout.from_key(key).cells(None))


def detect_frames(frames: Iterable[np.ndarray], key: bytes = PRODUCT_KEY,
                  max_frames: int = DEFAULT_MAX_FRAMES) -> Detection:
    """Run a detector over frames (stops reading after ``max_frames``)."""
    det = WatermarkDetector(key, max_frames)
    for frame in frames:
        det.feed(frame)
        if det.full:
            break
    return det.result()


__all__ = [
    "PRODUCT_KEY",
    "Detection",
    "WatermarkDetector",
    "WatermarkPayload",
    "Watermarker",
    "best_peak",
    "detect_frames",
    "pattern_tile",
    "session_payload",
    "sync_template",
    "tail_bound",
]
