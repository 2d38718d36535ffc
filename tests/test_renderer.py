"""Renderer properties on the default portrait: exact rest, no folds, still background,
a real mouth cavity, closed lids, moving irises, seamless paste-back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vivify.engines.avatar import face_topology as ft
from vivify.engines.motion.vector import motion, rest_motion
from vivify.engines.render.renderer import Renderer
from vivify.engines.render.warp import jacobian_determinant


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def luma(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)


def polygon_mask(shape: tuple[int, ...], poly: np.ndarray, grow: int = 0) -> np.ndarray:
    mask: np.ndarray = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    if grow:
        mask = cv2.dilate(mask, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return mask.astype(bool)


def mouth_opening_polygon(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points[list(ft.LIPS_UPPER_INNER)],
                           points[list(ft.LIPS_LOWER_INNER[::-1])]])


EXTREMES = {
    "yaw+": motion(head_yaw=1), "yaw-": motion(head_yaw=-1),
    "pitch+": motion(head_pitch=1), "pitch-": motion(head_pitch=-1),
    "roll+": motion(head_roll=1), "roll-": motion(head_roll=-1),
    "far+left": motion(head_scale=-1, head_tx=-1, head_ty=1),
    "near+right": motion(head_scale=1, head_tx=1, head_ty=-1),
    "jaw": motion(jaw_open=1), "jaw+roll": motion(jaw_open=1, head_roll=1, head_yaw=-0.7),
    "press": motion(jaw_open=0.6, lip_press=1), "round": motion(lip_round=1, jaw_open=0.3),
    "smile": motion(smile=1, jaw_open=0.4), "frown": motion(smile=-1, brow_frown=1),
    "blink": motion(blink_l=1, blink_r=1), "wide": motion(blink_l=-0.5, blink_r=-0.5,
                                                          brow_raise=1),
    "speech": motion(jaw_open=0.5, lip_stretch=0.6, upper_lip_raise=0.5, lower_lip_depress=0.5),
}


def test_rest_reproduces_the_source(renderer: Renderer, pack) -> None:
    frame = renderer.render(rest_motion())
    assert psnr(frame.image, pack.crop) >= 40.0
    assert psnr(renderer.paste_back(frame.image), pack.full) >= 40.0


@pytest.mark.parametrize("name", sorted(EXTREMES))
def test_flow_never_folds(renderer: Renderer, name: str) -> None:
    """det J > 0 everywhere but along the mouth cut, which the cavity layer covers.

    The cut is a tear by design: inside the target opening and at its two tips (the inner mouth
    corners, within 6% of the eye distance) the map is discontinuous, so det J means nothing.
    """
    frame = renderer.render(EXTREMES[name])
    det = jacobian_determinant(frame.maps)
    pts = frame.pose.points
    cut = polygon_mask(det.shape, mouth_opening_polygon(pts), grow=2)
    tips = np.zeros(det.shape, np.uint8)
    for corner in (78, 308):
        cv2.circle(tips, tuple(round(v) for v in pts[corner]),
                   int(np.ceil(0.06 * renderer.eye_distance)), 1, -1)
    cut |= tips.astype(bool)
    assert det[~cut].min() > 0.0, f"fold in {name}: min det {det[~cut].min():.3f}"


@pytest.mark.parametrize("name", ["yaw+", "pitch-", "roll+", "near+right", "far+left"])
def test_head_moves_hair_but_not_background(renderer: Renderer, pack, name: str) -> None:
    img = renderer.render(EXTREMES[name]).image
    still = renderer.flow.still
    assert still.mean() > 0.1  # the crop's corners: background and torso
    assert (pack.motion_weight[still] == 0).all()
    np.testing.assert_array_equal(img[still], pack.crop[still])
    lm = pack.landmarks
    top = int(lm[ft.FOREHEAD, 1] - 0.35 * renderer.eye_distance)  # in the hair, above the brow
    x = int(lm[ft.FOREHEAD, 0])
    hair = (slice(max(top - 12, 0), top + 12), slice(x - 40, x + 40))
    assert np.abs(img[hair].astype(int) - pack.crop[hair].astype(int)).mean() > 2.0


def test_open_mouth_shows_a_cavity_with_teeth(renderer: Renderer, pack) -> None:
    frame = renderer.render(motion(jaw_open=1.0))
    pts = frame.pose.points
    inside = polygon_mask(frame.image.shape, mouth_opening_polygon(pts))
    y = luma(frame.image)
    assert inside.sum() > 0.3 * renderer.eye_distance**2
    cx = round(pts[[13, 14], 0].mean())
    column = y[int(pts[13, 1]):int(pts[14, 1]), cx]
    third = max(len(column) // 3, 1)
    upper_teeth, middle = column[:third // 2 + 1].mean(), column[third:2 * third].mean()
    assert upper_teeth > middle + 60  # bright teeth hang from the upper lip over a dark cavity
    assert middle < 0.5 * float(np.median(y[polygon_mask(y.shape, pts[list(ft.FACE_OVAL)])]))
    # No stretched lip pixels: the cavity is not lip-coloured.
    lip = pack.palette["lip"]
    cavity = frame.image[inside].astype(np.float32)
    assert np.abs(cavity.mean(axis=0) - lip).sum() > 100


def test_pressed_lips_look_closed(renderer: Renderer, pack) -> None:
    """The portrait smiles with its teeth showing; /p b m/ must hide them."""
    rest_pts = renderer.render(rest_motion()).pose.points
    teeth_rest = polygon_mask(pack.crop.shape, mouth_opening_polygon(rest_pts))

    def teeth_like(img: np.ndarray) -> np.ndarray:  # bright and nearly colourless
        rgb = img.astype(int)
        return (rgb.min(axis=2) > 150) & (rgb.max(axis=2) - rgb.min(axis=2) < 45)

    frame = renderer.render(motion(jaw_open=0.4, lip_press=1.0))
    before = (teeth_like(pack.crop) & teeth_rest).sum()
    assert before > 50  # the source really shows teeth
    # What stays bright there is the lower lip's specular highlight, now moved up.
    assert (teeth_like(frame.image) & teeth_rest).sum() < 0.25 * before


def test_jaw_changes_the_mouth_region_monotonically(renderer: Renderer, pack) -> None:
    lm = pack.landmarks
    box = lm[list(ft.LIPS_LOWER_OUTER + ft.LIPS_UPPER_OUTER), :2]
    (x0, y0), (x1, y1) = box.min(0).astype(int) - 10, box.max(0).astype(int) + 40
    diffs = [np.abs(renderer.render(motion(jaw_open=j)).image[y0:y1, x0:x1].astype(int)
                    - pack.crop[y0:y1, x0:x1].astype(int)).mean() for j in (0.2, 0.5, 1.0)]
    assert diffs[0] > 1.0 and diffs == sorted(diffs)


def test_blink_covers_the_eyes_with_lid(renderer: Renderer, pack) -> None:
    lm = pack.landmarks
    frame = renderer.render(motion(blink_l=1.0, blink_r=1.0))
    for centre in (ft.RIGHT_IRIS_CENTER, ft.LEFT_IRIS_CENTER):
        cx, cy = np.round(lm[centre, :2]).astype(int)
        r = 3
        before = luma(pack.crop)[cy - r:cy + r, cx - r:cx + r].mean()
        after = luma(frame.image)[cy - r:cy + r, cx - r:cx + r].mean()
        skin = float(np.mean(pack.palette["skin"]))
        assert before < 0.6 * skin  # a dark iris at rest
        assert after > before + 0.5 * (skin - before)  # lid skin over it when closed


def test_gaze_moves_the_irises(renderer: Renderer, pack) -> None:
    lm = pack.landmarks

    def iris_x(img: np.ndarray, centre: int) -> float:
        cx, cy = np.round(lm[centre, :2]).astype(int)
        w = int(renderer.eye_distance * 0.3)
        patch = 255 - luma(img)[cy - 4:cy + 5, cx - w:cx + w]
        patch = np.clip(patch - np.percentile(patch, 60), 0, None)
        return float((patch.sum(0) * np.arange(patch.shape[1])).sum() / patch.sum()) + cx - w

    right = renderer.render(motion(gaze_x=1.0)).image
    left = renderer.render(motion(gaze_x=-1.0)).image
    for centre in (ft.RIGHT_IRIS_CENTER, ft.LEFT_IRIS_CENTER):
        assert iris_x(right, centre) > iris_x(pack.crop, centre) + 1.5
        assert iris_x(left, centre) < iris_x(pack.crop, centre) - 1.5


def test_inversion_converges(renderer: Renderer) -> None:
    for name in ("yaw+", "blink", "smile", "near+right"):
        pose = renderer.rig.pose(EXTREMES[name])
        delta = (pose.points - renderer.rig.source[:, :2])[renderer._controls]
        field = renderer.flow.forward_field(delta)
        positions = renderer.flow.invert(field)
        assert renderer.flow.residual(field, positions) < 0.5, name


def test_paste_back_is_seamless(renderer: Renderer, pack) -> None:
    full = renderer.paste_back(renderer.render(motion(head_yaw=1.0, jaw_open=0.5)).image)
    assert full.shape == pack.full.shape
    changed = np.abs(full.astype(int) - pack.full.astype(int)).max(axis=2) > 0
    _ys, xs = np.nonzero(changed)
    corners = np.array([[0, 0], [pack.size, pack.size]]) @ pack.crop_to_full[:, :2].T \
        + pack.crop_to_full[:, 2]
    assert changed.any()
    assert xs.min() >= corners[:, 0].min() - 3 and xs.max() <= corners[:, 0].max() + 3
    # No visible seam: neighbouring rows across the pasted region's edge differ little.
    edge = full[:, max(xs.min() - 2, 1)].astype(int) - full[:, max(xs.min() - 3, 0)].astype(int)
    assert np.abs(edge).mean() < 12


def test_config_validation(pack) -> None:
    from vivify.engines.render.renderer import RenderConfig

    with pytest.raises(ValueError, match="grid_step"):
        RenderConfig(grid_step=3)
    with pytest.raises(ValueError, match="multiple of the grid step"):
        Renderer(pack, RenderConfig(grid_step=8)).flow.__class__(
            np.zeros((3, 2)), np.zeros((100, 100), np.float32), grid_step=8)
    with pytest.raises(ValueError, match="iterations"):
        Renderer(pack, RenderConfig(iterations=0))


def test_gaze_keeps_the_eye_white_intact(renderer: Renderer, pack) -> None:
    """Outside the old and new iris discs, the eye after a gaze shift looks like the source."""
    frame = renderer.render(motion(gaze_x=0.4))
    lm = pack.landmarks
    for upper, lower, iris, k in ((ft.RIGHT_EYE_UPPER, ft.RIGHT_EYE_LOWER, ft.RIGHT_IRIS, 0),
                                  (ft.LEFT_EYE_UPPER, ft.LEFT_EYE_LOWER, ft.LEFT_IRIS, 1)):
        opening = polygon_mask(pack.crop.shape, np.concatenate(
            [lm[list(upper), :2], lm[list(lower[::-1]), :2]]))
        c = lm[iris[0], :2]
        r = float(np.linalg.norm(lm[list(iris[1:]), :2] - c, axis=1).mean())
        ys, xs = np.mgrid[0:pack.size, 0:pack.size]
        new = c + frame.pose.iris_offset[k]
        away = (np.hypot(xs - c[0], ys - c[1]) > 1.4 * r) & (np.hypot(xs - new[0],
                                                                        ys - new[1]) > 1.4 * r)
        region = opening & away
        assert region.sum() > 20
        diff = np.abs(frame.image[region].astype(int) - pack.crop[region].astype(int)).mean()
        assert diff < 15, diff
