"""Pictures to look at: portraits × mouth shapes, and a short clip per portrait.

``python -m bench.renderer_sheet [--out docs] [--no-clips]`` writes
``docs/renderer_contact_sheet.jpg`` (one row per portrait: rest, AA, EE, OO, M, F/V, a blink;
each tile the mouth and eyes of the aligned crop) and ``docs/clips/<portrait>.mp4`` (10 s at
256², the learned generator on an espeak-ng sentence, H.264 + AAC).

The portraits are the ones this machine can have offline, each a kind of input users bring:

- ``hopper``: Grace Hopper (US Navy photograph, public domain; matplotlib's sample data): a
  closed-mouth photo, an elderly face, glasses;
- ``astronaut``: Eileen Collins (NASA, public domain; scikit-image): a smile showing teeth;
- ``painting``: the astronaut through OpenCV's edge-preserving filter and detail enhancement
  (painterly: flat brush areas, no photo grain);
- ``cartoon``: the Hopper photo posterised to 8 colours (flat, stylised);
- ``sketch``: the astronaut as a pencil drawing under heavy grain (found only after the
  detector's retries, engines/avatar/face_search.py).

No darker-skinned or bearded portrait with a free licence could be had offline here (none in
Debian's or PyPI's packages that install without a download): docs/benchmarks.md says so.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import cv2
import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from vivify.engines.avatar.pack import AvatarPack

REPO = Path(__file__).resolve().parent.parent
SHAPES: dict[str, dict[str, float]] = {
    "rest": {},
    "AA": {"jaw_open": 0.9},
    "EE": {"jaw_open": 0.3, "lip_stretch": 0.8},
    "OO": {"jaw_open": 0.35, "lip_round": 1.0},
    "M": {"lip_press": 1.0},
    "F/V": {"jaw_open": 0.12, "upper_lip_raise": 0.5, "lower_lip_depress": -0.4},
    "blink": {"blink_l": 1.0, "blink_r": 1.0},
}
SENTENCE = ("Hello! My name is Peter Piper, and I am happy to meet you. Papa bought a bottle of "
            "milk, and we all sang along: la la la.")
TILE = (150, 110, 370, 440)  # x0, y0, x1, y1 in the 512² crop: eyes to chin


def hopper() -> np.ndarray:
    import matplotlib.cbook

    # get_sample_data is typed as "array or file"; for a .jpg it is a file.
    with cast(IO[bytes], matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as f:
        return np.asarray(Image.open(f).convert("RGB"))


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def painting() -> np.ndarray:
    smooth = cv2.edgePreservingFilter(astronaut(), flags=cv2.RECURS_FILTER, sigma_s=40,
                                      sigma_r=0.35)
    return cv2.detailEnhance(smooth, sigma_s=10, sigma_r=0.15)  # brush-like, no photo grain


def cartoon() -> np.ndarray:
    rgb = hopper()
    pixels = rgb.reshape(-1, 3).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    _, labels, centres = cv2.kmeans(pixels, 8, None, criteria, 3,  # type: ignore[call-overload]
                                    cv2.KMEANS_PP_CENTERS)
    return centres.astype(np.uint8)[labels.reshape(-1)].reshape(rgb.shape)


def sketch() -> np.ndarray:
    g = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2GRAY).astype(np.float32)
    inv = 255 - cv2.GaussianBlur(255 - g, (0, 0), 8)
    drawn = np.clip(g * 255 / np.maximum(inv, 1), 0, 255)
    noisy = drawn + np.random.default_rng(0).normal(0, 60, drawn.shape)
    return np.repeat(np.clip(noisy, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


PORTRAITS: dict[str, Callable[[], np.ndarray]] = {
    "hopper": hopper, "astronaut": astronaut, "painting": painting, "cartoon": cartoon,
    "sketch": sketch,
}


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def label(tile: np.ndarray, text: str) -> np.ndarray:
    out = tile.copy()
    cv2.putText(out, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def contact_sheet(packs: dict[str, AvatarPack], path: Path) -> None:
    from vivify.engines.motion.vector import motion
    from vivify.engines.render.renderer import Renderer

    x0, y0, x1, y1 = TILE
    rows = []
    for name, pack in packs.items():
        renderer = Renderer(pack)
        tiles = [label(renderer.render(motion(**values)).image[y0:y1, x0:x1],
                       f"{name} {shape}" if shape == "rest" else shape)
                 for shape, values in SHAPES.items()]
        rows.append(np.hstack(tiles))
    sheet = np.vstack(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), sheet[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {path} ({sheet.shape[1]}×{sheet.shape[0]})")


def mouth_metrics(packs: dict[str, AvatarPack]) -> dict[str, dict[str, Any]]:
    """What an open vowel shows, measured on the rendered AA frame of each portrait.

    Inside the rendered inner-lip opening: ``teeth`` is the share of bright, pale pixels
    (value ≥ 0.75 of the portrait's skin, saturation ≤ 0.35), ``teeth_rgb`` their mean colour
    (yellow-white: R ≥ G ≥ B), ``cavity`` the share of dark pixels (value ≤ 0.35 of the skin);
    ``lip_thickness`` is the upper and lower lips' thickness at the middle, AA over rest (1 =
    kept; a stretched lip thins).
    """
    from vivify.engines.avatar import face_topology as ft
    from vivify.engines.motion.vector import motion
    from vivify.engines.render.renderer import Renderer

    out: dict[str, dict[str, Any]] = {}
    for name, pack in packs.items():
        renderer = Renderer(pack)
        frame = renderer.render(motion(**SHAPES["AA"]))
        points = frame.pose.points
        inner = np.concatenate([points[list(ft.LIPS_UPPER_INNER)],
                                points[list(ft.LIPS_LOWER_INNER)][::-1]])
        polygon = np.zeros(frame.image.shape[:2], np.uint8)
        cv2.fillPoly(polygon, [np.round(inner).astype(np.int32)], 255)
        mask: np.ndarray = cv2.erode(polygon, np.ones((3, 3), np.uint8))
        px = frame.image[mask > 0].astype(np.float32)
        skin = float(np.max(pack.palette["skin"]))
        value = px.max(axis=1)
        sat = (value - px.min(axis=1)) / np.maximum(value, 1)
        teeth = (value >= 0.75 * skin) & (sat <= 0.35)
        rest = renderer.rig.pose(motion()).points

        def thickness(p: np.ndarray) -> tuple[float, float]:
            return float(p[13, 1] - p[0, 1]), float(p[17, 1] - p[14, 1])

        (up_a, lo_a), (up_r, lo_r) = thickness(points), thickness(rest)
        out[name] = {
            "teeth": round(float(teeth.mean()), 3),
            "teeth_rgb": [round(float(v)) for v in px[teeth].mean(axis=0)] if teeth.any()
            else [],
            "cavity": round(float((value <= 0.35 * skin).mean()), 3),
            "lip_thickness": round(min(up_a / max(up_r, 1e-6), lo_a / max(lo_r, 1e-6)), 2),
        }
    return out


def clips(portraits: dict[str, np.ndarray], out_dir: Path) -> None:
    from vivify.engines.audio.espeak import synthesize
    from vivify.streamer.offline.render import RenderOptions, render_file

    out_dir.mkdir(parents=True, exist_ok=True)
    speech = asyncio.run(synthesize(SENTENCE))[: 10 * 16000]
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        _write_wav(wav, speech)
        for name, rgb in portraits.items():
            image = Path(tmp) / f"{name}.png"
            image.write_bytes(png(rgb))
            report = render_file(image, wav, out_dir / f"{name}.mp4",
                                 RenderOptions(size=256, label="AI-generated"))
            size_kb = (out_dir / f"{name}.mp4").stat().st_size // 1024
            print(f"wrote {report.output} ({report.frames} frames, {size_kb} KiB)")


def _write_wav(path: Path, samples: np.ndarray) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--no-clips", action="store_true")
    args = parser.parse_args(argv)
    from vivify.engines.avatar.pack import AvatarPreparer

    preparer = AvatarPreparer()
    portraits = {name: make() for name, make in PORTRAITS.items()}
    packs = {name: preparer.prepare(png(rgb)) for name, rgb in portraits.items()}
    for name, pack in packs.items():
        print(f"{name}: {pack.meta.get('warnings') or 'ok'}; style {pack.palette['style']}")
    contact_sheet(packs, args.out / "renderer_contact_sheet.jpg")
    for name, values in mouth_metrics(packs).items():
        print(f"{name} AA: {values}")
    if not args.no_clips:
        clips(portraits, args.out / "clips")
    return 0


if __name__ == "__main__":
    sys.exit(main())
