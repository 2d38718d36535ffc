"""No dead-end portraits: detection retried on conditioned copies, and manual placement."""

from __future__ import annotations

import json
from typing import Any

import cv2
import numpy as np
import pytest

from tests.support.images import png_bytes
from vivify.engines.avatar.face_points import MESH_INDEX, NAMES, BadPointsError, FacePoints
from vivify.engines.avatar.face_search import find_face
from vivify.engines.errors import FaceTooSmallError

GOOD = {"right_eye": [160, 170], "left_eye": [240, 170], "nose": [200, 215],
        "mouth_right": [168, 260], "mouth_left": [232, 260]}


def noisy_sketch(rgb: np.ndarray, sigma: float = 60.0) -> np.ndarray:
    """A pencil-style sketch (colour dodge of the grey image) under heavy paper grain."""
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    inv = 255 - cv2.GaussianBlur(255 - g, (0, 0), 8)
    sketch = np.clip(g * 255 / np.maximum(inv, 1), 0, 255)
    noisy = sketch + np.random.default_rng(0).normal(0, sigma, sketch.shape)
    return np.repeat(np.clip(noisy, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


@pytest.mark.parametrize(("change", "error", "match"), [
    ({"right_eye": GOOD["left_eye"], "left_eye": GOOD["right_eye"]}, BadPointsError, "mirrored"),
    ({"nose": [200, 390]}, BadPointsError, "nose"),
    ({"mouth_right": [232, 260], "mouth_left": [168, 260]}, BadPointsError, "width"),
    ({"nose": [float("nan"), 200]}, BadPointsError, "inside"),
    ({"nose": [200, 1e9]}, BadPointsError, "inside"),
    ({"nose": [True, 200]}, BadPointsError, "two numbers"),
    ({"nose": [200]}, BadPointsError, "two numbers"),
    ({"extra": [1, 2]}, BadPointsError, "exactly"),
    ({"left_eye": [170, 170]}, FaceTooSmallError, "apart"),
])
def test_bad_points_are_refused_with_a_reason(change: dict[str, Any], error: type,
                                              match: str) -> None:
    with pytest.raises(error, match=match):
        FacePoints.parse(dict(GOOD, **change), 400, 400, min_eye_distance=24)


def test_points_parse_from_json_and_fit_a_template_exactly() -> None:
    points = FacePoints.parse(json.dumps(GOOD), 400, 400, min_eye_distance=24)
    assert points.as_dict() == {k: [float(x), float(y)] for k, (x, y) in GOOD.items()}
    with pytest.raises(BadPointsError, match="JSON"):
        FacePoints.parse("{not json", 400, 400, 24)
    template = np.zeros((478, 3), np.float32)
    rng = np.random.default_rng(1)
    template[:, :2] = rng.uniform(0, 100, (478, 2))
    template[list(MESH_INDEX), :2] = (points.xy - 100) / 2  # an affine image of the points
    fitted = points.fit(template)
    assert np.abs(fitted[list(MESH_INDEX), :2] - points.xy).max() < 1e-3
    assert np.allclose(fitted[:, :2], template[:, :2] * 2 + 100, atol=1e-3)
    detection = points.detection()
    x0, y0, x1, y1 = detection.box
    assert x0 < 160 and x1 > 240 and y0 < 170 and y1 > 260


@pytest.mark.slow
def test_a_noisy_sketch_is_found_after_denoising(preparer: Any, astronaut: np.ndarray) -> None:
    sketch = noisy_sketch(astronaut)
    # The first look finds only texture (the landmark model sees no face in what it found).
    assert all(not preparer._is_face(sketch, f) for f in preparer.analyzer.detect(sketch))
    found = find_face(sketch, preparer.analyzer.detect, preparer._is_face)
    assert found is not None and found.how is not None
    pack = preparer.prepare(png_bytes(sketch))
    assert f"face found after {found.how}" in pack.meta["warnings"]
    # It is the astronaut's face, not texture: the pupils where the photo has them.
    plain = preparer.analyzer.landmarks(astronaut, preparer.analyzer.detect(astronaut)[0])
    placed = preparer.analyzer.landmarks(found.condition(sketch) if found.condition else sketch,
                                         found.face)
    assert np.abs(placed[list(MESH_INDEX[:2]), :2] - plain[list(MESH_INDEX[:2]), :2]).max() < 8


@pytest.mark.slow
def test_a_tilted_face_is_found_and_mapped_back(preparer: Any, astronaut: np.ndarray) -> None:
    plain = find_face(astronaut, preparer.analyzer.detect)
    assert plain is not None and plain.how is None
    # Detection on a copy padded and rotated by find_face maps back to the original's pixels.
    from vivify.engines.avatar.face_search import _geometric, _map_detection

    for how, copy, to_original in _geometric(astronaut):
        faces = preparer.analyzer.detect(copy)
        if not faces:
            continue
        mapped = _map_detection(faces[0], to_original)
        # BlazeFace's keypoints are coarse on a bigger canvas; a wrong map is off by ≥ 100 px.
        assert np.abs(mapped.keypoints[:2] - plain.face.keypoints[:2]).max() < 25, how


@pytest.mark.slow
def test_a_blank_drawing_placed_by_hand_gets_the_reference_mesh(preparer: Any) -> None:
    blank = np.full((400, 400, 3), 200, np.uint8)
    pack = preparer.prepare(png_bytes(blank), points=GOOD)
    assert any("reference mesh" in w for w in pack.meta["warnings"])
    assert pack.meta["points"] == {k: [float(x), float(y)] for k, (x, y) in GOOD.items()}
    # In the crop, the pupils sit where every avatar has them (the rig's geometry holds).
    right, left = pack.landmarks[MESH_INDEX[0], :2], pack.landmarks[MESH_INDEX[1], :2]
    assert abs(right[1] - left[1]) < 1 and abs((left[0] - right[0]) / pack.size - 0.2) < 0.01
    again = preparer.prepare(png_bytes(blank), points=GOOD)
    assert again.key == pack.key and "-p" in pack.key  # cached under the points too
    assert set(NAMES) == set(GOOD)


@pytest.mark.slow
def test_the_api_places_a_face_by_hand(face_models: Any, tmp_path: Any) -> None:
    from fastapi.testclient import TestClient

    from vivify.streamer.server.config import ServerConfig
    from vivify.streamer.server.serve import build

    app, _ = build(ServerConfig(max_sessions=1, workers=1), home=tmp_path)
    blank = png_bytes(np.full((400, 400, 3), 200, np.uint8))
    form = {"consent": "true"}
    with TestClient(app) as c:
        r = c.post("/v1/avatars", data=form, files={"image": ("b.png", blank, "image/png")})
        assert r.status_code == 422 and r.json()["error"]["code"] == "no_face"
        assert "by hand" in r.json()["error"]["message"]
        bad = dict(GOOD, nose=[200, 399])
        r = c.post("/v1/avatars", data=dict(form, points=json.dumps(bad)),
                   files={"image": ("b.png", blank, "image/png")})
        assert r.status_code == 422 and r.json()["error"]["code"] == "bad_points"
        r = c.post("/v1/avatars", data=dict(form, points=json.dumps(GOOD)),
                   files={"image": ("b.png", blank, "image/png")})
        assert r.status_code == 201, r.text
        record = r.json()
        assert record["points"] == {k: [float(x), float(y)] for k, (x, y) in GOOD.items()}
        assert any("placed by hand" in w for w in record["warnings"])
        # The renderer is built from the stored points, and a session runs on it.
        assert c.get(f"/v1/avatars/{record['id']}/preview.jpg").status_code == 200
        r = c.post("/v1/sessions", json={"avatar": record["id"], "mode": "broadcast"})
        assert r.status_code == 201, r.text
        assert c.delete(f"/v1/sessions/{r.json()['id']}").status_code == 204
