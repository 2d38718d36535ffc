"""Rig properties: rest is the source, scale invariance, and each dimension does its job."""

from __future__ import annotations

import numpy as np
import pytest

from vivify.engines.avatar import face_topology as ft
from vivify.engines.motion.vector import (
    MOTION_DIM,
    clip_motion,
    emotion_offset,
    motion,
    rest_motion,
)
from vivify.engines.render.rig import Rig


@pytest.fixture(scope="module")
def rig(pack):
    return Rig(pack.landmarks, pack.size)


def _gap(points: np.ndarray) -> float:
    return float(points[14, 1] - points[13, 1])


def test_rest_pose_is_the_source(rig: Rig) -> None:
    pose = rig.pose(rest_motion())
    np.testing.assert_array_equal(pose.points, rig.source[:, :2].astype(np.float32))
    assert not pose.iris_offset.any()


def test_displacements_scale_with_the_face(pack) -> None:
    small = Rig(pack.landmarks, pack.size)
    big_lm = pack.landmarks * 2.0
    big = Rig(big_lm, pack.size * 2)
    m = motion(jaw_open=0.7, smile=0.5, head_yaw=0.6, blink_l=1.0, brow_raise=0.4)
    d_small = small.pose(m).points - small.source[:, :2]
    d_big = big.pose(m).points - big.source[:, :2]
    np.testing.assert_allclose(d_big, 2.0 * d_small, atol=1e-3)


def test_jaw_opens_and_lip_press_closes(rig: Rig) -> None:
    rest_gap = _gap(rig.pose(rest_motion()).points)
    gaps = [_gap(rig.pose(motion(jaw_open=j)).points) for j in (0.0, 0.3, 0.6, 1.0)]
    assert gaps == sorted(gaps) and gaps[-1] > rest_gap + 0.3 * rig.scale
    pressed = rig.pose(motion(jaw_open=0.6, lip_press=1.0)).points
    inner_gap = (pressed[list(ft.LIPS_LOWER_INNER), 1] - pressed[list(ft.LIPS_UPPER_INNER), 1])
    assert np.abs(inner_gap).max() < 0.5  # pixels: the lips meet along the whole mouth


def test_blink_brings_the_lids_together(rig: Rig) -> None:
    src = rig.source[:, :2]
    closed = rig.pose(motion(blink_l=1.0, blink_r=1.0)).points
    eyes = ((ft.LEFT_EYE_UPPER, ft.LEFT_EYE_LOWER), (ft.RIGHT_EYE_UPPER, ft.RIGHT_EYE_LOWER))
    for up, lo in eyes:
        before = np.abs(src[list(lo), 1] - src[list(up), 1]).max()
        after = np.abs(closed[list(lo), 1] - closed[list(up), 1]).max()
        assert after < 0.1 * before


def test_one_eye_blinks_alone(rig: Rig) -> None:
    pts = rig.pose(motion(blink_l=1.0)).points
    src = rig.source[:, :2]
    assert np.allclose(pts[list(ft.RIGHT_EYE_UPPER)], src[list(ft.RIGHT_EYE_UPPER)])
    assert not np.allclose(pts[list(ft.LEFT_EYE_UPPER)], src[list(ft.LEFT_EYE_UPPER)])


def test_yaw_has_parallax_and_roll_rotates(rig: Rig) -> None:
    src = rig.source[:, :2]
    turned = rig.pose(motion(head_yaw=1.0)).points - src
    nose_dx = turned[ft.NOSE_TIP, 0]
    edge_dx = turned[list(ft.JAW_HINGE), 0].mean()
    assert nose_dx < 0  # positive yaw turns towards the viewer's left
    assert abs(nose_dx) > abs(edge_dx) + 1.0  # the nose is nearer the camera: it moves more
    rolled = rig.pose(motion(head_roll=1.0)).points
    eyes = rolled[[ft.RIGHT_IRIS_CENTER, ft.LEFT_IRIS_CENTER]]
    angle = np.degrees(np.arctan2(*(eyes[1] - eyes[0])[::-1]))
    assert 8.0 < angle < 12.0  # clockwise roll of about MAX_ROLL_DEG


def test_gaze_moves_only_the_irises(rig: Rig) -> None:
    pose = rig.pose(motion(gaze_x=1.0, gaze_y=-1.0))
    assert np.allclose(pose.points, rig.source[:, :2], atol=1e-4)
    assert (pose.iris_offset[:, 0] > 0).all() and (pose.iris_offset[:, 1] < 0).all()


def test_motion_contract_validation() -> None:
    with pytest.raises(ValueError, match="unknown motion dimension"):
        motion(jaw=1.0)
    with pytest.raises(ValueError, match="unknown emotion"):
        emotion_offset("bored")
    with pytest.raises(ValueError, match="intensity"):
        emotion_offset("happy", 1.5)
    with pytest.raises(ValueError, match="dims"):
        clip_motion(np.zeros(3))
    wild = np.full(MOTION_DIM, 5.0, np.float32)
    assert clip_motion(wild).max() <= 1.0


def test_emotions_are_distinct(rig: Rig) -> None:
    shapes = {name: rig.pose(emotion_offset(name)).points
              for name in ("neutral", "happy", "sad", "surprised", "angry")}
    names = list(shapes)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(shapes[a] - shapes[b]).max() > 1.0, (a, b)
