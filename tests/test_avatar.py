"""Avatar preparation: real portraits and stylised ones work; every bad input gets a clear error."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.support.images import png_bytes
from vivify.engines.avatar import face_topology as ft
from vivify.engines.avatar.image_io import MAX_BYTES
from vivify.engines.avatar.pack import AvatarPack, AvatarPreparer
from vivify.engines.errors import (
    CorruptImageError,
    FaceTooSmallError,
    ImageTooLargeError,
    ImageTooSmallError,
    NoFaceError,
    NotAnImageError,
)


def test_pack_geometry(pack) -> None:
    lm = pack.landmarks
    assert pack.crop.shape == (512, 512, 3) and lm.shape == (478, 3)
    eyes = lm[[ft.RIGHT_IRIS_CENTER, ft.LEFT_IRIS_CENTER], :2]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1.0  # aligned: pupils level
    assert abs(np.linalg.norm(eyes[1] - eyes[0]) - 0.2 * 512) < 1.0
    assert lm[ft.CHIN, 1] > lm[13, 1] > lm[ft.NOSE_TIP, 1] > eyes[:, 1].mean()
    w = pack.motion_weight
    assert w[int(eyes[:, 1].mean()), 256] == pytest.approx(1.0, abs=0.02)  # the face moves
    assert w[0].max() == w[-1].max() == w[:, 0].max() == w[:, -1].max() == 0  # borders stay
    assert pack.full.shape[0] % 2 == 0 and pack.full.shape[1] % 2 == 0


def test_cache_roundtrip_and_atomicity(preparer, astronaut, tmp_path: Path) -> None:
    prep = AvatarPreparer(cache_dir=tmp_path, analyzer=preparer.analyzer)
    data = png_bytes(astronaut)
    first = prep.prepare(data)
    again = prep.prepare(data)
    assert again.key == first.key
    np.testing.assert_array_equal(again.crop, first.crop)
    np.testing.assert_array_equal(again.landmarks, first.landmarks)
    assert [p.name for p in tmp_path.iterdir()] == [first.key]  # no temporary leftovers
    # A damaged cache entry is rebuilt, not trusted.
    (tmp_path / first.key / "meta.json").write_text(json.dumps({"format": -1}))
    rebuilt = prep.prepare(data)
    np.testing.assert_array_equal(rebuilt.crop, first.crop)
    assert AvatarPack.load(tmp_path / first.key).key == first.key


@pytest.mark.parametrize("style", ["painting", "pencil", "cartoon", "grey"])
def test_stylised_portraits(preparer, astronaut, style: str) -> None:
    bgr = cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR)
    if style == "painting":
        out = cv2.stylization(bgr, sigma_s=60, sigma_r=0.45)
    elif style == "pencil":
        _, out = cv2.pencilSketch(bgr, sigma_s=60, sigma_r=0.07, shade_factor=0.05)
    elif style == "cartoon":
        smooth = cv2.bilateralFilter(cv2.pyrDown(bgr), 9, 75, 75)
        smooth = cv2.pyrUp(cv2.bilateralFilter(smooth, 9, 75, 75))
        edges = cv2.adaptiveThreshold(cv2.medianBlur(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), 7),
                                      255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 2)
        out = cv2.bitwise_and(smooth, smooth, mask=edges)
    else:
        out = cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    pack = preparer.prepare(png_bytes(cv2.cvtColor(out, cv2.COLOR_BGR2RGB)), use_cache=False)
    eyes = pack.landmarks[[ft.RIGHT_IRIS_CENTER, ft.LEFT_IRIS_CENTER], :2]
    assert np.abs(eyes - [[205, 215], [307, 215]]).max() < 4  # same geometry as the photo


def test_exif_orientation_is_applied(preparer, pack, astronaut) -> None:
    rotated = Image.fromarray(np.ascontiguousarray(np.rot90(astronaut)))  # stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view": undoes rot90's counter-clockwise turn
    buf = io.BytesIO()
    rotated.save(buf, format="JPEG", quality=95, exif=exif)
    upright = preparer.prepare(buf.getvalue(), use_cache=False)
    assert upright.meta["source_size"] == [512, 512]
    err = np.abs(upright.landmarks[:468, :2] - pack.landmarks[:468, :2]).mean()
    assert err < 2.0


def test_large_photo_works(preparer, pack, astronaut) -> None:
    big = np.full((3000, 4000, 3), 200, np.uint8)
    face = cv2.resize(astronaut, (1536, 1536), interpolation=cv2.INTER_CUBIC)
    big[700:2236, 1200:2736] = face
    out = preparer.prepare(png_bytes(big), use_cache=False)
    assert out.meta["source_size"] == [4000, 3000]
    assert max(out.full.shape[:2]) <= 1280
    err = np.abs(out.landmarks[:468, :2] - pack.landmarks[:468, :2]).mean()
    assert err < 3.0


def test_several_faces_take_the_largest(preparer, astronaut) -> None:
    small = cv2.resize(astronaut, (384, 384), interpolation=cv2.INTER_AREA)
    canvas = np.concatenate([astronaut, np.pad(small, ((0, 128), (0, 0), (0, 0)),
                                                constant_values=128)], axis=1)
    out = preparer.prepare(png_bytes(canvas), use_cache=False)
    assert any("faces found" in w for w in out.meta["warnings"])
    assert out.meta["face_box"][0] < 512  # the big face on the left


def test_not_an_image(preparer) -> None:
    with pytest.raises(NotAnImageError, match="not an image"):
        preparer.prepare(b"this is a text file, not a portrait\n" * 10)
    with pytest.raises(NotAnImageError, match="empty"):
        preparer.prepare(b"")


def test_corrupt_image(preparer, astronaut) -> None:
    buf = io.BytesIO()
    Image.fromarray(astronaut).save(buf, format="JPEG")
    with pytest.raises(CorruptImageError, match="corrupt or truncated"):
        preparer.prepare(buf.getvalue()[: len(buf.getvalue()) // 3])


def test_no_face(preparer) -> None:
    from skimage import data

    with pytest.raises(NoFaceError, match="no face"):
        preparer.prepare(png_bytes(np.ascontiguousarray(data.coffee())))
    gradient = np.tile(np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None], (480, 1, 3))
    with pytest.raises(NoFaceError):
        preparer.prepare(png_bytes(gradient))


def test_face_too_small(preparer, astronaut) -> None:
    tiny = cv2.resize(astronaut, (200, 200), interpolation=cv2.INTER_AREA)
    canvas = np.full((900, 900, 3), 180, np.uint8)
    canvas[350:550, 350:550] = tiny
    with pytest.raises((FaceTooSmallError, NoFaceError)) as info:
        preparer.prepare(png_bytes(canvas))
    if isinstance(info.value, FaceTooSmallError):
        assert "minimum is 24 px" in str(info.value)


def test_face_too_small_is_reported_with_the_minimum(preparer, astronaut) -> None:
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)  # 21 px pupils
    with pytest.raises(FaceTooSmallError, match="minimum is 24 px"):
        preparer.prepare(png_bytes(small))


def test_image_too_large(preparer, tmp_path: Path) -> None:
    with pytest.raises(ImageTooLargeError, match="MiB"):
        preparer.prepare(b"\x89PNG" + bytes(MAX_BYTES))
    huge = tmp_path / "huge.png"
    Image.new("L", (9000, 6000)).save(huge)  # compresses to little, decodes to 54 MP
    with pytest.raises(ImageTooLargeError, match="MP"):
        preparer.prepare(huge)


def test_image_too_small(preparer) -> None:
    with pytest.raises(ImageTooSmallError, match="at least 64"):
        preparer.prepare(png_bytes(np.zeros((40, 40, 3), np.uint8)))
