"""Stage benchmark for the foundation: avatar preparation, renderer, paste-back, offline render.

Run with ``make bench-stages`` (pinned to one core via OMP/OpenBLAS thread counts). Prints a
JSON report and writes it to bench/results/stages-<timestamp>.json; numbers are wall-clock on
whatever machine runs it, so compare them as ratios on one machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPEATS = 3


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _stats(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1e3
    return {"median_ms": round(float(np.median(ms)), 3), "p95_ms": round(float(np.percentile(
        ms, 95)), 3), "n": len(ms)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer frames; skip the big photo")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    from skimage import data

    from engines.audio_io import load_audio
    from engines.avatar import AvatarPreparer
    from engines.baseline_driver import BaselineConfig, BaselineDriver
    from engines.motion import motion
    from engines.renderer import Renderer
    from streamer.offline import render_file

    astronaut = np.ascontiguousarray(data.astronaut())
    report: dict[str, object] = {
        "machine": platform.node(), "cpu": platform.processor() or platform.machine(),
        "cores_visible": os.cpu_count(), "python": sys.version.split()[0],
        "opencv": cv2.__version__, "numpy": np.__version__,
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        prep = AvatarPreparer(cache_dir=Path(tmp))
        prep.prepare(_png(astronaut), use_cache=False)  # warm the interpreters
        t = time.perf_counter()
        pack = prep.prepare(_png(astronaut), use_cache=False)
        report["prepare_512_s"] = round(time.perf_counter() - t, 3)
        if not args.quick:
            big = np.full((3000, 4000, 3), 200, np.uint8)
            big[700:2236, 1200:2736] = cv2.resize(astronaut, (1536, 1536))
            t = time.perf_counter()
            prep.prepare(_png(big), use_cache=False)
            report["prepare_4000x3000_s"] = round(time.perf_counter() - t, 3)

        t = time.perf_counter()
        renderer = Renderer(pack)
        report["renderer_init_s"] = round(time.perf_counter() - t, 3)
        # A realistic motion stream: the baseline driver on an espeak-ng sentence.
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), "The quick brown fox jumps over the lazy "
                        "dog, and then it sings a little song about the morning sun."], check=True)
        motions = BaselineDriver(BaselineConfig()).drive(load_audio(wav))
        if args.quick:
            motions = motions[:60]
        times: list[float] = []
        best: list[float] = []
        crops = []
        for m in motions:
            runs = []
            for _ in range(REPEATS):
                t = time.perf_counter()
                image = renderer.render(m).image
                runs.append(time.perf_counter() - t)
            crops.append(image)
            times.append(runs[0])
            best.append(min(runs))
        report["render_512_per_frame"] = _stats(times[5:])
        # This VM's speed drifts by up to 2× between minutes; the best of a few runs of the same
        # frame filters out that interference and is the figure to compare across versions.
        report["render_512_per_frame_best_of_3"] = _stats(best[5:])
        # Worst case: mouth cut, gaze, half-closed lids and a turned head all at once.
        worst = motion(jaw_open=0.7, lip_stretch=0.4, gaze_x=0.6, blink_l=0.8, blink_r=0.8,
                       head_yaw=0.5, head_roll=-0.3)
        times = []
        for _ in range(100):
            t = time.perf_counter()
            renderer.render(worst)
            times.append(time.perf_counter() - t)
        report["render_512_all_layers"] = _stats(times[5:])
        paste = []
        for crop in crops[:100]:
            t = time.perf_counter()
            renderer.paste_back(crop)
            paste.append(time.perf_counter() - t)
        report["paste_back_full_frame"] = _stats(paste) | {"size": list(pack.full.shape[:2])}
        # Paste-back into a 1280×720 frame: the astronaut centred in a 720p canvas.
        wide = np.full((720, 1280, 3), 90, np.uint8)
        wide[104:616, 384:896] = astronaut
        pack720 = prep.prepare(_png(wide), use_cache=False)
        r720 = Renderer(pack720)
        crops720 = [r720.render(m).image for m in motions[:100]]
        paste = []
        for crop in crops720:
            t = time.perf_counter()
            r720.paste_back(crop)
            paste.append(time.perf_counter() - t)
        report["paste_back_720p"] = _stats(paste)

        png = Path(tmp) / "astronaut.png"
        png.write_bytes(_png(astronaut))
        rep = render_file(png, wav, Path(tmp) / "out.mp4", preparer=prep)
        report["offline_render"] = {"audio_s": round(rep.audio_seconds, 2),
                                    "wall_s": round(rep.wall_seconds, 2),
                                    "x_realtime": round(rep.realtime_factor, 2)}
    path = args.out or Path("bench/results") / f"stages-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
