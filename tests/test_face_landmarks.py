"""Face detection, 478-point landmarks and segmentation on real images; the model cache.

The models come from ``model_store.fetch_models()`` (a no-op when the cache is complete, a
one-time pip download of the MediaPipe wheel otherwise).
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from vivify.engines.avatar import model_store
from vivify.engines.avatar.face_landmarks import FaceAnalyzer, FaceDetection

RIGHT_IRIS, LEFT_IRIS = 468, 473  # centres; the subject's right eye is on the image's left
NOSE_TIP, UPPER_LIP_INNER, LOWER_LIP_INNER, CHIN, FOREHEAD = 1, 13, 14, 152, 10
RIGHT_EAR_SIDE, LEFT_EAR_SIDE = 234, 454
# Lid contours corner to corner: lower lid, then the upper lid back (a closed polygon).
RIGHT_EYE_RING = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE_RING = (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return model_store.fetch_models()


@pytest.fixture(scope="session")
def analyzer(models_dir: Path) -> FaceAnalyzer:
    return FaceAnalyzer(num_threads=1)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="session")
def astro_face(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> FaceDetection:
    faces = analyzer.detect(astronaut)
    assert len(faces) == 1
    return faces[0]


@pytest.fixture(scope="session")
def astro_points(
    analyzer: FaceAnalyzer, astronaut: np.ndarray, astro_face: FaceDetection
) -> np.ndarray:
    return analyzer.landmarks(astronaut, astro_face)


def eye_distance(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[RIGHT_IRIS, :2] - points[LEFT_IRIS, :2]))


def detect_and_mark(analyzer: FaceAnalyzer, rgb: np.ndarray) -> np.ndarray:
    faces = analyzer.detect(rgb)
    assert len(faces) >= 1
    return analyzer.landmarks(rgb, faces[0])


# --- detection ---------------------------------------------------------------------------


def test_astronaut_has_one_face_with_keypoints_on_it(
    astronaut: np.ndarray, astro_face: FaceDetection
) -> None:
    x0, y0, x1, y1 = astro_face.box
    assert astro_face.score > 0.8
    assert 150 < x0 < x1 < 300 and 50 < y0 < y1 < 200  # the head, top centre of the photo
    assert 70 < x1 - x0 < 130 and 70 < y1 - y0 < 130
    kp = astro_face.keypoints
    assert kp.shape == (6, 2) and kp.dtype == np.float32
    right_eye, left_eye, nose, mouth = kp[:4]
    assert right_eye[0] < nose[0] < left_eye[0]  # subject's right eye on the image's left
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
    assert np.all((kp[:4] >= [x0, y0]) & (kp[:4] <= [x1, y1]))


@pytest.mark.parametrize("name", ["coffee", "gradient", "grey", "noise"])
def test_no_face_gives_no_detection(analyzer: FaceAnalyzer, name: str) -> None:
    if name == "coffee":
        rgb = data.coffee()
    elif name == "gradient":
        ramp = np.linspace(0, 255, 640, dtype=np.float32)
        rgb = np.dstack([np.tile(ramp, (480, 1))] * 3).astype(np.uint8)
    elif name == "grey":
        rgb = np.full((300, 400, 3), 128, np.uint8)
    else:
        rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert analyzer.detect(rgb) == []


def test_small_face_in_a_wide_frame_is_found(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    canvas = np.full((480, 800, 3), 90, np.uint8)
    canvas[100:356, 400:656] = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    faces = analyzer.detect(canvas)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box
    assert 470 < (x0 + x1) / 2 < 540 and 125 < (y0 + y1) / 2 < 185


@pytest.mark.parametrize("style", ["stylization", "pencil"])
def test_stylised_portrait_still_has_a_face(
    analyzer: FaceAnalyzer, astronaut: np.ndarray, style: str
) -> None:
    if style == "stylization":
        rgb = cv2.stylization(astronaut, sigma_s=60, sigma_r=0.45)
    else:
        grey, _ = cv2.pencilSketch(astronaut, sigma_s=60, sigma_r=0.07, shade_factor=0.05)
        rgb = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    faces = analyzer.detect(rgb)
    assert len(faces) >= 1
    points, presence = analyzer.landmarks_with_presence(rgb, faces[0])
    assert presence > 0.5
    assert points[RIGHT_IRIS, 0] < points[NOSE_TIP, 0] < points[LEFT_IRIS, 0]


def test_rejects_images_that_are_not_rgb_uint8(
    analyzer: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        analyzer.detect(astronaut[:, :, 0])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        analyzer.segment_person(astronaut.astype(np.float32))


# --- landmarks ---------------------------------------------------------------------------


def test_landmarks_shape_and_face_box(astro_points: np.ndarray, astro_face: FaceDetection) -> None:
    assert astro_points.shape == (478, 3) and astro_points.dtype == np.float32
    assert np.isfinite(astro_points).all()
    x0, y0, x1, y1 = astro_face.box
    margin = 0.2 * (x1 - x0)
    xy = astro_points[:, :2]
    assert np.all((xy >= [x0 - margin, y0 - margin]) & (xy <= [x1 + margin, y1 + margin]))
    inside = np.all((xy >= [x0, y0]) & (xy <= [x1, y1]), axis=1)
    assert inside.mean() > 0.85


def test_iris_centres_sit_inside_their_eye_contours(astro_points: np.ndarray) -> None:
    for centre, ring in ((RIGHT_IRIS, RIGHT_EYE_RING), (LEFT_IRIS, LEFT_EYE_RING)):
        polygon = astro_points[list(ring), :2].reshape(-1, 1, 2)
        point = (float(astro_points[centre, 0]), float(astro_points[centre, 1]))
        assert cv2.pointPolygonTest(polygon, point, measureDist=False) > 0


def test_iris_points_are_a_small_ring_in_mediapipe_order(astro_points: np.ndarray) -> None:
    iod = eye_distance(astro_points)
    for centre in (RIGHT_IRIS, LEFT_IRIS):
        c = astro_points[centre, :2]
        ring = astro_points[centre + 1 : centre + 5, :2]
        radius = np.linalg.norm(ring - c, axis=1)
        assert np.all((radius > 0.05 * iod) & (radius < 0.15 * iod))  # human iris ≈ 0.09
        # MediaPipe's refined mesh order, both eyes: image right, up, left, down.
        right, up, left, down = ring
        assert right[0] > c[0] > left[0]
        assert up[1] < c[1] < down[1]


def test_face_layout_is_plausible(astro_points: np.ndarray) -> None:
    p = astro_points
    iod = eye_distance(p)
    assert 30 < iod < 70  # px, for the 512×512 portrait
    assert p[RIGHT_IRIS, 0] < p[NOSE_TIP, 0] < p[LEFT_IRIS, 0]
    assert abs(p[RIGHT_IRIS, 1] - p[LEFT_IRIS, 1]) < 0.15 * iod  # eyes roughly level
    eye_y = (p[RIGHT_IRIS, 1] + p[LEFT_IRIS, 1]) / 2
    assert p[FOREHEAD, 1] < eye_y < p[NOSE_TIP, 1] < p[UPPER_LIP_INNER, 1]
    assert p[UPPER_LIP_INNER, 1] <= p[LOWER_LIP_INNER, 1] < p[CHIN, 1]
    assert p[RIGHT_EAR_SIDE, 0] < p[RIGHT_IRIS, 0] and p[LEFT_IRIS, 0] < p[LEFT_EAR_SIDE, 0]
    # Depth: the nose tip is closer to the camera (smaller z) than the sides of the face.
    assert p[NOSE_TIP, 2] < min(p[RIGHT_EAR_SIDE, 2], p[LEFT_EAR_SIDE, 2]) - 0.3 * iod


def test_presence_is_high_on_a_face_and_low_elsewhere(
    analyzer: FaceAnalyzer, astronaut: np.ndarray, astro_face: FaceDetection
) -> None:
    assert analyzer.landmarks_with_presence(astronaut, astro_face)[1] > 0.9
    kp = np.array([[280, 130], [320, 130], [300, 150], [300, 170], [255, 140], [345, 140]])
    fake = FaceDetection((250.0, 100.0, 350.0, 200.0), 0.9, kp.astype(np.float32))
    assert analyzer.landmarks_with_presence(data.coffee(), fake)[1] < 0.5


def rotate(rgb: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    out = cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(110, 110, 110))
    return out, m


@pytest.mark.parametrize("degrees", [20, -35])
def test_rotated_portrait_gives_the_rotated_landmarks(
    analyzer: FaceAnalyzer, astronaut: np.ndarray, astro_points: np.ndarray, degrees: float
) -> None:
    rotated, m = rotate(astronaut, degrees)
    points = detect_and_mark(analyzer, rotated)
    expected = astro_points[:, :2] @ m[:, :2].T + m[:, 2]
    error = np.linalg.norm(points[:, :2] - expected, axis=1) / eye_distance(astro_points)
    assert error[:468].mean() < 0.02  # measured ≈ 0.004
    assert error[[RIGHT_IRIS, LEFT_IRIS]].max() < 0.03


def test_scaled_and_padded_portrait_maps_back(
    analyzer: FaceAnalyzer, astronaut: np.ndarray, astro_points: np.ndarray
) -> None:
    # Half size, pasted at (400, 100) in a wider grey frame: only the full-range model sees it.
    canvas = np.full((480, 800, 3), 90, np.uint8)
    canvas[100:356, 400:656] = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    points = detect_and_mark(analyzer, canvas)
    # Pixel centres: x_small = (x + 0.5) / 2 - 0.5.
    expected = (astro_points[:, :2] + 0.5) * 0.5 - 0.5 + [400, 100]
    error = np.linalg.norm(points[:, :2] - expected, axis=1) / (0.5 * eye_distance(astro_points))
    assert error[:468].mean() < 0.03  # measured ≈ 0.005


def test_upscaled_portrait_maps_back(
    analyzer: FaceAnalyzer, astronaut: np.ndarray, astro_points: np.ndarray
) -> None:
    big = cv2.resize(astronaut, (1536, 1536), interpolation=cv2.INTER_CUBIC)
    points = detect_and_mark(analyzer, big)
    expected = (astro_points[:, :2] + 0.5) * 3.0 - 0.5
    error = np.linalg.norm(points[:, :2] - expected, axis=1) / (3.0 * eye_distance(astro_points))
    assert error[:468].mean() < 0.02  # measured ≈ 0.004
    ratio = np.ptp(points[:468, 2]) / np.ptp(astro_points[:468, 2])
    assert 2.7 < ratio < 3.3  # z scales with x and y


def test_mirrored_portrait_swaps_the_eyes(
    analyzer: FaceAnalyzer, astronaut: np.ndarray, astro_points: np.ndarray
) -> None:
    w = astronaut.shape[1]
    points = detect_and_mark(analyzer, astronaut[:, ::-1])  # a view, not a copy, on purpose
    iod = eye_distance(astro_points)
    for mine, theirs in ((RIGHT_IRIS, LEFT_IRIS), (LEFT_IRIS, RIGHT_IRIS)):
        mirrored = np.array([w - 1 - astro_points[theirs, 0], astro_points[theirs, 1]])
        assert np.linalg.norm(points[mine, :2] - mirrored) < 0.03 * iod


# --- segmentation ------------------------------------------------------------------------


def test_segmentation_covers_head_and_hair_not_background(
    analyzer: FaceAnalyzer, astronaut: np.ndarray, astro_points: np.ndarray
) -> None:
    mask = analyzer.segment_person(astronaut)
    assert mask.shape == astronaut.shape[:2] and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    face = astro_points[:468, :2]
    hull = cv2.convexHull(face.astype(np.float32)).astype(np.int32)
    face_mask = np.zeros(mask.shape, np.uint8)
    cv2.fillConvexPoly(face_mask, hull, 1)
    assert mask[face_mask > 0].mean() > 0.95
    # Hair: above the forehead point by a fifth of the face height.
    top = astro_points[FOREHEAD, :2]
    hair = top - [0, 0.2 * (astro_points[CHIN, 1] - top[1])]
    assert mask[int(hair[1]), int(hair[0])] > 0.5
    for corner in (mask[:24, :24], mask[:24, -24:]):  # flag and rocket, top corners
        assert corner.mean() < 0.1


def test_segmentation_handles_any_size(analyzer: FaceAnalyzer) -> None:
    mask = analyzer.segment_person(np.full((37, 91, 3), 200, np.uint8))
    assert mask.shape == (37, 91)


# --- model store -------------------------------------------------------------------------


def make_wheel(path: Path, models_dir: Path, corrupt: str | None = None) -> Path:
    """A wheel-shaped zip holding the real model files (one corrupted, if asked) and junk."""
    with zipfile.ZipFile(path, "w") as zf:
        for model in model_store.MODELS.values():
            blob = (models_dir / model.basename).read_bytes()
            if model.name == corrupt:
                blob = blob[:-1] + bytes([blob[-1] ^ 0xFF])
            zf.writestr(model.wheel_path, blob)
        zf.writestr("mediapipe/python/_framework_bindings.so", b"not for us")
    return path


def test_model_path_reports_missing_and_corrupt_files(tmp_path: Path, models_dir: Path) -> None:
    with pytest.raises(model_store.ModelsMissingError, match="fetch-models"):
        model_store.model_path("face_landmark", cache_dir=tmp_path)
    target = model_store.models_dir(tmp_path) / "face_landmark.tflite"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\x00" * 1024)
    with pytest.raises(model_store.ModelsMissingError, match="corrupt"):
        model_store.model_path("face_landmark", cache_dir=tmp_path)
    assert issubclass(model_store.ModelsMissingError, RuntimeError)
    with pytest.raises(KeyError):
        model_store.model_path("no_such_model", cache_dir=tmp_path)


def test_cache_dir_follows_vivify_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVIFY_HOME", str(tmp_path))
    assert model_store.default_cache_dir() == tmp_path / "models"
    assert model_store.models_dir() == tmp_path / "models" / "mediapipe-0.10.21"
    monkeypatch.delenv("VIVIFY_HOME")
    assert model_store.default_cache_dir() == Path.home() / ".cache" / "vivify" / "models"


def test_fetch_from_a_local_wheel(tmp_path: Path, models_dir: Path) -> None:
    wheel = make_wheel(tmp_path / "mediapipe-0.10.21-cp311-none-any.whl", models_dir)
    cache = tmp_path / "cache"
    out = model_store.fetch_models(cache_dir=cache, wheel=wheel)
    assert out == model_store.models_dir(cache)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(m.basename for m in model_store.MODELS.values())  # nothing else
    for name in model_store.MODELS:
        assert model_store.model_path(name, cache_dir=cache).is_file()
    # Idempotent: a complete cache never opens the wheel (this one does not exist).
    assert model_store.fetch_models(cache_dir=cache, wheel=tmp_path / "missing.whl") == out


def test_fetch_replaces_only_a_damaged_file(tmp_path: Path, models_dir: Path) -> None:
    cache = tmp_path / "cache"
    out = model_store.fetch_models(cache, make_wheel(tmp_path / "a.whl", models_dir))
    (out / "iris_landmark.tflite").write_bytes(b"truncated")
    model_store.fetch_models(cache, make_wheel(tmp_path / "b.whl", models_dir))
    assert model_store.model_path("iris_landmark", cache_dir=cache).stat().st_size > 1_000_000


def test_fetch_refuses_a_wheel_with_a_bad_checksum(tmp_path: Path, models_dir: Path) -> None:
    wheel = make_wheel(tmp_path / "bad.whl", models_dir, corrupt="face_landmark")
    cache = tmp_path / "cache"
    with pytest.raises(model_store.ModelFetchError, match="SHA-256 mismatch"):
        model_store.fetch_models(cache_dir=cache, wheel=wheel)
    assert not (model_store.models_dir(cache) / "face_landmark.tflite").exists()
    assert not list(model_store.models_dir(cache).glob("*.part"))


def test_fetch_downloads_the_pinned_wheel_with_pip(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_pip(cmd: list[str], check: bool = False) -> subprocess.CompletedProcess[bytes]:
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        make_wheel(dest / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl", models_dir)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(model_store.subprocess, "run", fake_pip)
    out = model_store.fetch_models(cache_dir=tmp_path / "cache")
    assert len(calls) == 1
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert "mediapipe==0.10.21" in cmd and "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert cmd[cmd.index("--platform") + 1] == "manylinux_2_28_x86_64"
    assert cmd[cmd.index("--python-version") + 1] == "3.11"
    assert len(list(out.iterdir())) == len(model_store.MODELS)


def test_failed_download_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(cmd: list[str], check: bool = False) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(cmd, 1)

    monkeypatch.setattr(model_store.subprocess, "run", failing_pip)
    with pytest.raises(model_store.ModelFetchError, match="exit code 1"):
        model_store.fetch_models(cache_dir=tmp_path / "cache")
