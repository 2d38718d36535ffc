"""Avatar preparation: one portrait → an ``AvatarPack`` the renderer animates.

Steps: decode (EXIF-aware, bounded) → detect the largest face → 478 landmarks → a similarity
transform that puts the eyes level at a fixed place and size in a square crop (so every avatar
has the same geometry and the rig's units mean the same thing) → person segmentation on the crop
→ the *motion weight* mask (head and hair move, the motion fades down the neck, background and
torso never move) → colours for the synthesised mouth interior and an iris-free copy of the crop
for gaze → the paste-back transform into the full portrait.

Packs are cached on disk under the image's sha256, the rig version and the crop size, written
atomically (temporary directory + rename), so a crash never leaves half a pack behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vivify.engines.avatar import face_topology as ft
from vivify.engines.avatar.face_landmarks import FaceAnalyzer, FaceDetection
from vivify.engines.avatar.face_points import FacePoints
from vivify.engines.avatar.face_search import find_face
from vivify.engines.avatar.image_io import load_image
from vivify.engines.avatar.model_store import vivify_home
from vivify.engines.errors import FaceTooSmallError, NoFaceError
from vivify.engines.motion.vector import RIG_VERSION

log = logging.getLogger(__name__)

DEFAULT_SIZE = 512  # crop side, pixels
EYE_DISTANCE = 0.20  # inter-pupil distance in the crop, × crop side
EYE_LINE = 0.42  # height of the eye line in the crop, × crop side
MIN_EYE_DISTANCE = 24  # pixels between the pupils in the original image
DETECT_MAX_SIDE = 1024  # detection runs on a copy no larger than this
FULL_MAX_SIDE = 1280  # full-frame output: the portrait fitted within this side
NECK_FADE = (0.45, 1.5)  # motion fades from 1 to 0 this far below the chin, × eye distance
MASK_FEATHER = 0.22  # Gaussian sigma of the motion mask, × eye distance: keeps the flow unfolded
BORDER_RAMP = 0.06  # motion fades to 0 this close to the crop border, × crop side
PACK_FORMAT = 2  # 2: palette gains gum and style (engines/render/mouth_interior.py)
_EYES = ((ft.RIGHT_EYE_UPPER, ft.RIGHT_EYE_LOWER), (ft.LEFT_EYE_UPPER, ft.LEFT_EYE_LOWER))


@dataclass
class AvatarPack:
    """Everything the renderer needs for one portrait, in crop coordinates unless stated."""

    key: str
    image_sha256: str
    rig_version: str
    size: int
    crop: np.ndarray  # (S, S, 3) uint8 RGB: the aligned face crop
    crop_no_iris: np.ndarray  # (S, S, 3) uint8: the crop with irises painted out, for gaze
    crop_lids: np.ndarray  # (S, S, 3) uint8: the crop with the eye openings skinned over, blinks
    landmarks: np.ndarray  # (478, 3) float32: x, y pixels; z relative depth in pixels
    motion_weight: np.ndarray  # (S, S) float32 0..1: how much of the head's motion applies
    full: np.ndarray  # (Hf, Wf, 3) uint8: the whole portrait at output resolution
    crop_to_full: np.ndarray  # (2, 3) float64 affine: crop pixels → full pixels
    palette: dict[str, np.ndarray]  # RGB float32: lip, skin, teeth, cavity, tongue, gum;
    # style = (light, levels, 0): the mouth's lighting slope and posterise levels
    meta: dict[str, Any] = field(default_factory=dict)

    _ARRAYS = ("crop", "crop_no_iris", "crop_lids", "landmarks", "motion_weight", "full",
               "crop_to_full")

    def save(self, directory: Path) -> None:
        """Write atomically: a temporary sibling directory renamed into place."""
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory.parent))
        try:
            arrays = {name: getattr(self, name) for name in self._ARRAYS}
            arrays.update({f"palette_{k}": v for k, v in self.palette.items()})
            np.savez(tmp / "pack.npz", **arrays)
            meta = dict(self.meta, key=self.key, image_sha256=self.image_sha256,
                        rig_version=self.rig_version, size=self.size, format=PACK_FORMAT)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            if directory.exists():
                shutil.rmtree(directory, ignore_errors=True)
            os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, directory: Path) -> AvatarPack:
        meta = json.loads((directory / "meta.json").read_text())
        if meta.get("format") != PACK_FORMAT or meta.get("rig_version") != RIG_VERSION:
            raise ValueError(f"avatar pack {directory} was made for another rig or format")
        with np.load(directory / "pack.npz") as data:
            arrays = {name: data[name] for name in cls._ARRAYS}
            palette = {k[len("palette_"):]: data[k] for k in data.files if k.startswith("palette_")}
        return cls(key=meta["key"], image_sha256=meta["image_sha256"],
                   rig_version=meta["rig_version"], size=int(meta["size"]), palette=palette,
                   meta=meta, **arrays)


def avatars_dir() -> Path:
    """Where prepared packs are cached (``$VIVIFY_HOME/avatars`` or ``~/.cache/vivify``)."""
    return vivify_home() / "avatars"


def pack_key(image_sha256: str, size: int, points: FacePoints | None = None) -> str:
    key = f"{image_sha256[:24]}-{RIG_VERSION}-{size}"
    if points is not None:  # the same image placed by hand is another avatar
        key += "-p" + hashlib.sha256(np.round(points.xy, 2).tobytes()).hexdigest()[:8]
    return key


class AvatarPreparer:
    """Turns portraits into packs, reusing one set of face models across calls."""

    def __init__(self, cache_dir: Path | None = None, analyzer: FaceAnalyzer | None = None) -> None:
        self.cache_dir = cache_dir or avatars_dir()
        self._analyzer = analyzer
        self._template: np.ndarray | None = None

    @property
    def analyzer(self) -> FaceAnalyzer:
        if self._analyzer is None:
            self._analyzer = FaceAnalyzer()
        return self._analyzer

    def prepare(self, source: str | Path | bytes, size: int = DEFAULT_SIZE,
                use_cache: bool = True, points: Any = None) -> AvatarPack:
        """Load a cached pack for this image, or build and cache one.

        ``points`` (a mapping or JSON text, see :mod:`vivify.engines.avatar.face_points`) places
        the face
        by hand instead of the detector; raises ``BadPointsError`` when they cannot be a face.
        """
        if size % 16 or not 128 <= size <= 1024:
            raise ValueError(f"size must be a multiple of 16 within 128..1024, got {size}")
        rgb, data = load_image(source)
        placed = None if points is None else FacePoints.parse(
            points, rgb.shape[1], rgb.shape[0], MIN_EYE_DISTANCE)
        digest = hashlib.sha256(data).hexdigest()
        key = pack_key(digest, size, placed)
        directory = self.cache_dir / key
        if use_cache and (directory / "meta.json").exists():
            try:
                return AvatarPack.load(directory)
            except (ValueError, OSError, KeyError) as exc:  # stale or damaged: rebuild
                log.warning("rebuilding avatar pack %s: %s", key, exc)
        pack = self.build(rgb, digest, size, placed)
        if use_cache:
            pack.save(directory)
        return pack

    def build(self, rgb: np.ndarray, digest: str, size: int,
              points: FacePoints | None = None) -> AvatarPack:
        t0 = time.perf_counter()
        warnings: list[str] = []
        face, lm = (self._found_landmarks(rgb, warnings) if points is None
                    else self._placed_landmarks(rgb, points, warnings))
        eye_r, eye_l = lm[ft.RIGHT_IRIS_CENTER, :2], lm[ft.LEFT_IRIS_CENTER, :2]
        eye_dist = float(np.linalg.norm(eye_l - eye_r))
        if eye_dist < MIN_EYE_DISTANCE:
            raise FaceTooSmallError(
                f"the face is too small: {eye_dist:.0f} px between the pupils; the minimum is "
                f"{MIN_EYE_DISTANCE} px (a face about {MIN_EYE_DISTANCE * 4} px wide)"
            )
        to_crop = _alignment(eye_r, eye_l, size)
        crop = _warp_crop(rgb, to_crop, size)
        crop_lm = lm.copy()
        crop_lm[:, :2] = lm[:, :2] @ to_crop[:, :2].T + to_crop[:, 2]
        crop_lm[:, 2] *= float(np.sqrt(abs(np.linalg.det(to_crop[:, :2]))))
        person = self.analyzer.segment_person(crop)
        weight = motion_weight(crop_lm, person, size)
        full, crop_to_full = _full_frame(rgb, to_crop)
        pack = AvatarPack(
            key=pack_key(digest, size, points), image_sha256=digest, rig_version=RIG_VERSION,
            size=size,
            crop=crop, crop_no_iris=_paint_out_irises(crop, crop_lm),
            crop_lids=_paint_closed_lids(crop, crop_lm), landmarks=crop_lm.astype(
                np.float32), motion_weight=weight, full=full, crop_to_full=crop_to_full,
            palette=_palette(crop, crop_lm),
            meta={"source_size": [int(rgb.shape[1]), int(rgb.shape[0])],
                  "face_box": [round(v, 1) for v in face.box], "face_score": round(face.score, 3),
                  "eye_distance_px": round(eye_dist, 1), "warnings": warnings,
                  "points": None if points is None else points.as_dict(),
                  "prepare_seconds": round(time.perf_counter() - t0, 3)},
        )
        return pack

    def _found_landmarks(self, rgb: np.ndarray, warnings: list[str]
                         ) -> tuple[FaceDetection, np.ndarray]:
        """The detector's largest face (retried on conditioned copies: engines/face_search)."""
        h, w = rgb.shape[:2]
        f = min(1.0, DETECT_MAX_SIDE / max(h, w))  # detection runs on a bounded copy
        small = rgb if f == 1.0 else cv2.resize(rgb, (round(w * f), round(h * f)),
                                                 interpolation=cv2.INTER_AREA)
        found = find_face(small, self.analyzer.detect, self._is_face)
        if found is None:
            raise NoFaceError(
                "no face found in the image, even after contrast equalisation, denoising, "
                "rescaling and small rotations; use a portrait where the face is clearly "
                "visible and roughly frontal, or place it by hand: give the points of the eye "
                "centres, the nose tip and the mouth corners")
        if found.how is not None:
            warnings.append(f"face found after {found.how}")
        if found.faces > 1:
            warnings.append(f"{found.faces} faces found; animating the largest")
        for warning in warnings:
            log.warning(warning)
        d = found.face
        x0, y0, x1, y1 = (v / f for v in d.box)
        face = FaceDetection(box=(x0, y0, x1, y1), score=d.score, keypoints=d.keypoints / f)
        mesh_image = rgb if found.condition is None else found.condition(rgb)
        return face, self.analyzer.landmarks(mesh_image, face).astype(np.float64)

    def _is_face(self, rgb: np.ndarray, face: FaceDetection) -> bool:
        """The landmark model sees a face where the detector put one (MediaPipe's 0.5)."""
        return self.analyzer.landmarks_with_presence(rgb, face)[1] >= 0.5

    def _placed_landmarks(self, rgb: np.ndarray, points: FacePoints, warnings: list[str]
                          ) -> tuple[FaceDetection, np.ndarray]:
        """Landmarks where the person placed the face: the model's, where it finds that
        face; else the reference mesh fitted to the points (engines/face_points)."""
        face = points.detection()
        lm, presence = self.analyzer.landmarks_with_presence(rgb, face)
        if presence >= 0.5 and points.agrees_with(lm):
            warnings.append("face placed by hand; landmarks found there")
            return face, lm.astype(np.float64)
        warnings.append("face placed by hand; a reference mesh fitted to the five points")
        return face, points.fit(self.template()).astype(np.float64)

    def template(self) -> np.ndarray:
        """The reference mesh for hand placement: the default avatar's landmarks."""
        if self._template is None:
            from vivify.engines.avatar.default_avatar import default_portrait_path

            self._template = self.prepare(default_portrait_path()).landmarks
        return self._template


def _alignment(eye_r: np.ndarray, eye_l: np.ndarray, size: int) -> np.ndarray:
    """Similarity transform (2×3) putting the pupils level, ``EYE_DISTANCE`` apart."""
    d = eye_l - eye_r
    scale = EYE_DISTANCE * size / float(np.hypot(*d))
    angle = float(np.arctan2(d[1], d[0]))
    c, s = np.cos(-angle) * scale, np.sin(-angle) * scale
    rot = np.array([[c, -s], [s, c]])
    centre = (eye_r + eye_l) / 2
    target = np.array([size / 2, EYE_LINE * size])
    return np.concatenate([rot, (target - rot @ centre)[:, None]], axis=1)


def _warp_crop(rgb: np.ndarray, to_crop: np.ndarray, size: int) -> np.ndarray:
    """Resample the crop; large downscales go through an area-filtered copy to avoid aliasing."""
    scale = float(np.sqrt(abs(np.linalg.det(to_crop[:, :2]))))
    src, m = rgb, to_crop
    if scale < 0.5:
        pre = scale * 1.5
        src = cv2.resize(rgb, None, fx=pre, fy=pre, interpolation=cv2.INTER_AREA)
        m = to_crop.copy()
        m[:, :2] /= pre
    return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def motion_weight(lm: np.ndarray, person: np.ndarray, size: int) -> np.ndarray:
    """Where the head's motion applies: head and hair 1, fading down the neck, elsewhere 0.

    The selfie segmentation separates the person from the background; drawings and paintings
    sometimes defeat it, so the face and an ellipse around it always count as head.
    """
    eye_dist = float(np.linalg.norm(lm[ft.LEFT_IRIS_CENTER, :2] - lm[ft.RIGHT_IRIS_CENTER, :2]))
    oval = lm[list(ft.FACE_OVAL), :2].astype(np.float32)
    head = (person > 0.5).astype(np.float32)
    core = np.zeros((size, size), np.float32)
    centre = oval.mean(axis=0)
    half = (oval.max(axis=0) - oval.min(axis=0)) / 2
    cv2.ellipse(core, (int(centre[0]), int(centre[1] - 0.1 * half[1])),
                (int(half[0] * 1.15), int(half[1] * 1.2)), 0, 0, 360, 1.0, -1)
    cv2.fillPoly(core, [np.round(oval).astype(np.int32)], 1.0)
    # Segmentation counts only near the head: not on the shoulders, not far into the scene.
    near = np.zeros_like(core)
    cv2.ellipse(near, (int(centre[0]), int(centre[1] - 0.3 * half[1])),
                (int(half[0] * 2.2), int(half[1] * 2.0)), 0, 0, 360, 1.0, -1)
    weight = np.maximum(core, head * near)
    chin_y = float(lm[ft.CHIN, 1])
    ys = np.arange(size, dtype=np.float32)[:, None]
    t = (ys - chin_y - NECK_FADE[0] * eye_dist) / ((NECK_FADE[1] - NECK_FADE[0]) * eye_dist)
    weight *= 1.0 - np.clip(t, 0.0, 1.0)
    sigma = MASK_FEATHER * eye_dist
    weight = cv2.GaussianBlur(weight, (0, 0), sigma)
    ramp_px = BORDER_RAMP * size
    xs = np.arange(size, dtype=np.float32)
    edge = np.clip(np.minimum(xs, size - 1 - xs) / ramp_px, 0.0, 1.0)
    weight *= edge[None, :] * edge[:, None]
    weight[weight < 1e-3] = 0.0  # exactly still, not almost: the background is never resampled
    return np.clip(weight, 0.0, 1.0).astype(np.float32)


def _full_frame(rgb: np.ndarray, to_crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The portrait at output resolution and the crop → full-frame affine."""
    h, w = rgb.shape[:2]
    f = min(1.0, FULL_MAX_SIDE / max(h, w))
    # Even sizes: H.264 in 4:2:0 needs them.
    fw, fh = max(2, round(w * f) // 2 * 2), max(2, round(h * f) // 2 * 2)
    full = rgb if (fw, fh) == (w, h) else cv2.resize(rgb, (fw, fh), interpolation=cv2.INTER_AREA)
    to_full = np.diag([fw / w, fh / h])
    crop_to_src = cv2.invertAffineTransform(to_crop)
    crop_to_full = np.concatenate([to_full @ crop_to_src[:, :2], (to_full @ crop_to_src[:, 2])
                                   [:, None]], axis=1)
    return np.ascontiguousarray(full), crop_to_full


def eye_polygon(lm: np.ndarray, upper: tuple[int, ...], lower: tuple[int, ...]) -> np.ndarray:
    """The eye opening as one closed polygon (upper lid, then lower lid backwards)."""
    return np.concatenate([lm[list(upper), :2], lm[list(lower[::-1]), :2]]).astype(np.float32)


def _paint_out_irises(crop: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The crop with each iris replaced by inpainted eye white, so gaze can move the iris."""
    mask = np.zeros(crop.shape[:2], np.uint8)
    for centre, ring in ((ft.RIGHT_IRIS_CENTER, ft.RIGHT_IRIS[1:]),
                         (ft.LEFT_IRIS_CENTER, ft.LEFT_IRIS[1:])):
        c = lm[centre, :2]
        r = float(np.linalg.norm(lm[list(ring), :2] - c, axis=1).mean())
        cv2.circle(mask, (round(c[0]), round(c[1])), int(np.ceil(r * 1.25)), 255, -1)
    openings = np.zeros_like(mask)
    for up, lo in _EYES:
        cv2.fillPoly(openings, [np.round(eye_polygon(lm, up, lo)).astype(np.int32)], 255)
    mask &= np.asarray(cv2.dilate(openings, np.ones((3, 3), np.uint8)), dtype=np.uint8)
    bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
    out = cv2.inpaint(bgr, mask, 5, cv2.INPAINT_TELEA)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def _paint_closed_lids(crop: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The crop with each eye opening covered by lid skin and a lash line: a closed eye.

    Landmarks sit near, not exactly on, the lid margins, so a warp alone leaves a slit of iris
    showing; the renderer fades this plate in as a blink completes.
    """
    eye_dist = float(np.linalg.norm(lm[ft.LEFT_IRIS_CENTER, :2] - lm[ft.RIGHT_IRIS_CENTER, :2]))
    mask = np.zeros(crop.shape[:2], np.uint8)
    for up, lo in _EYES:
        cv2.fillPoly(mask, [np.round(eye_polygon(lm, up, lo)).astype(np.int32)], 255)
    grow = max(3, round(0.04 * eye_dist))
    mask = np.asarray(cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow))),
                      dtype=np.uint8)
    bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
    out = cv2.cvtColor(cv2.inpaint(bgr, mask, grow, cv2.INPAINT_TELEA), cv2.COLOR_BGR2RGB)
    # Lashes: the darkest tone along the upper lid, drawn where the closed lids meet.
    for up, lo in _EYES:
        upper, lower = lm[list(up), :2], lm[list(lo), :2]
        lid = crop[np.clip(np.round(upper[:, 1]).astype(int), 0, crop.shape[0] - 1),
                   np.clip(np.round(upper[:, 0]).astype(int), 0, crop.shape[1] - 1)]
        colour = lid.astype(np.float32).min(axis=0) * 0.8
        closed = lower + 0.15 * (upper - lower)
        line = np.round(closed * 8).astype(np.int32)
        thick = max(1, round(0.02 * eye_dist))
        layer = out.copy()
        cv2.polylines(layer, [line], False, tuple(float(c) for c in colour), thick,
                      lineType=cv2.LINE_AA, shift=3)
        out = cv2.addWeighted(out, 0.55, layer, 0.45, 0)
    return out


def _palette(crop: np.ndarray, lm: np.ndarray) -> dict[str, np.ndarray]:
    """Colours for the synthesised mouth, taken from the portrait so paintings stay paintings."""
    def median_in(polys: list[np.ndarray], minus: list[np.ndarray] | None = None) -> np.ndarray:
        mask = np.zeros(crop.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(p).astype(np.int32) for p in polys], 255)
        for p in minus or []:
            cv2.fillPoly(mask, [np.round(p).astype(np.int32)], 0)
        px = crop[mask > 0]
        return np.median(px, axis=0).astype(np.float32) if len(px) else np.full(3, 128, np.float32)

    outer = np.concatenate([lm[list(ft.LIPS_UPPER_OUTER), :2],
                            lm[list(ft.LIPS_LOWER_OUTER[::-1]), :2]])
    inner = np.concatenate([lm[list(ft.LIPS_UPPER_INNER), :2],
                            lm[list(ft.LIPS_LOWER_INNER[::-1]), :2]])
    lip = median_in([outer], [inner])
    cheeks = [lm[[50, 205, 187, 123], :2], lm[[280, 425, 411, 352], :2]]
    skin = median_in(cheeks)
    lum = float(skin.mean())
    # How colourful the portrait is: a pencil drawing gets grey teeth, not ivory ones.
    sat = float((skin.max() - skin.min()) / max(float(skin.max()), 1.0))
    colour = float(np.clip(sat / 0.15, 0.0, 1.0))
    ivory = np.array([242, 232, 210], np.float32)  # yellow-white, as teeth are
    ivory = ivory.mean() + (ivory - ivory.mean()) * colour
    teeth = np.clip(ivory * float(np.clip(0.75 + 0.25 * lum / 180, 0.6, 1.05)), 0, 255)
    # A portrait that shows its teeth lends their real colour (the brightest part of the mouth).
    mouth = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(mouth, [np.round(inner).astype(np.int32)], 255)
    inside = crop[mouth > 0].astype(np.float32)
    if len(inside) > 30:
        bright = inside[inside.mean(axis=1) >= np.percentile(inside.mean(axis=1), 70)]
        if bright.mean() > 0.9 * lum:
            teeth = np.median(bright, axis=0)
    cavity = np.clip(lip * 0.36 + np.array([14, 0, 2], np.float32) * colour, 0, 255)
    tongue = np.clip(lip * 0.82 + np.array([14, -14, -10], np.float32) * colour, 0, 255)
    gum = np.clip(lip + (np.array([226, 128, 134], np.float32) - lip) * 0.3 * colour, 0, 255)
    # The portrait's lighting across the mouth: image-right cheek brighter → light > 0.
    side = [float(median_in([c]).mean()) for c in cheeks]
    light = float(np.clip((side[1] - side[0]) / max(side[0] + side[1], 1.0), -0.3, 0.3))
    # Flat, stylised colour portraits (a cartoon, a poster: a dozen colours cover most of the
    # face) get a posterised interior. Measured: photos and a painterly stylisation 0.12–0.30,
    # an 8-colour cartoon 0.81. Grey images stay smooth: a black-and-white photo and a pencil
    # drawing both read as "few colours", and a smooth grey interior suits either.
    oval = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(oval, [np.round(lm[list(ft.FACE_OVAL), :2]).astype(np.int32)], 255)
    q = (crop[oval > 0] // 8).astype(np.int32)
    _, counts = np.unique(q[:, 0] * 1024 + q[:, 1] * 32 + q[:, 2], return_counts=True)
    dominant = float(np.sort(counts)[::-1][:12].sum() / max(int(counts.sum()), 1))
    levels = 8.0 if dominant > 0.6 and colour > 0.5 else 0.0
    return {"lip": lip, "skin": skin, "teeth": teeth.astype(np.float32),
            "cavity": cavity.astype(np.float32), "tongue": tongue.astype(np.float32),
            "gum": gum.astype(np.float32),
            "style": np.array([light, levels, 0.0], np.float32)}
