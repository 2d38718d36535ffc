"""``make parity``: the renderer graph against the CPU renderer and across every runtime here.

Two checks, with the tolerances stated up front:

1. **Golden clip** — a short motion sequence (speech, a blink, a head turn, gaze, lip press) on
   the default avatar, rendered by the numpy CPU renderer (the reference) and by the exported
   graph on each runtime: every frame's PSNR against the reference must be ≥ ``MIN_PSNR_DB``.
2. **Runtime agreement** — Polygraphy's ``Comparator`` runs the same feeds through torch (the
   twin), ONNX Runtime and any GPU runtime present (native TensorRT, ONNX Runtime CUDA/TensorRT
   EP, torch CUDA) and compares outputs pairwise: |Δ| ≤ ``ATOL`` grey levels at the
   ``ERROR_QUANTILE`` of pixels (a rounding flip is one level; the few pixels on the mouth seam
   can flip further because a float difference moves a hard edge), and fp16 engines get
   ``ATOL_FP16``.

Writes ``report.json`` and a contact sheet of the clip to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vivify.engines.motion.vector import motion
from vivify.engines.render.graph_renderer import to_uint8
from vivify.engines.runtimes import ModelManifest, Runner, create_runner, probe, select_runtime
from vivify.engines.runtimes.renderer_bank import BANK_INPUTS, build_bank, renderer_feeds
from vivify.engines.runtimes.torch_runner import TorchConfig, TorchRunner

log = logging.getLogger(__name__)

MIN_PSNR_DB = 40.0
ATOL = 1.0  # grey levels, at ERROR_QUANTILE of the pixels
ATOL_FP16 = 4.0
ERROR_QUANTILE = 0.999
CLIP_FRAMES = 25  # one second at 25 fps


def golden_motions(n: int = CLIP_FRAMES) -> np.ndarray:
    """(n, 19): a deterministic second of talking with a blink, a head turn and a glance."""
    t = np.arange(n, dtype=np.float32) / 25.0
    out = []
    for k, s in enumerate(t):
        blink = float(np.clip(1.0 - abs(k - 12) / 3.0, 0.0, 1.0))  # frames 9..15
        out.append(motion(
            jaw_open=0.45 + 0.4 * np.sin(2 * np.pi * 3.1 * s),
            lip_stretch=0.3 + 0.3 * np.sin(5 * s),
            upper_lip_raise=0.2, lip_press=1.0 if k in (5, 6) else 0.0,
            head_yaw=0.8 * np.sin(2 * np.pi * 0.7 * s), head_pitch=0.3 * np.sin(3 * s),
            head_roll=0.25 * np.cos(2 * s), blink_l=blink, blink_r=blink,
            gaze_x=0.6 if k >= 18 else 0.0, smile=0.3, brow_raise=0.2 * s))
    return np.stack(out).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def runners_here(manifest: ModelManifest) -> dict[str, Runner]:
    """torch on the CPU (the twin), ONNX Runtime CPU, and every GPU runtime present."""
    runners: dict[str, Runner] = {
        "torch-cpu": TorchRunner(manifest, TorchConfig(device="cpu")),
        "ort-cpu": create_runner(manifest, "ort-cpu"),
    }
    have = probe()
    for name in ("tensorrt", "ort-tensorrt", "torch-cuda", "ort-cuda"):
        if have.why_not(name, manifest) is None:
            select_runtime(name, manifest, have)
            runners[name] = create_runner(manifest, name, have)
    return runners


class _PolygraphyAdapter:
    """Wraps an engines runner as a Polygraphy runner (built lazily: polygraphy is optional)."""

    @staticmethod
    def make(runner: Runner, name: str, pinned: dict[str, np.ndarray]) -> Any:
        from polygraphy.backend.base import BaseRunner
        from polygraphy.common import TensorMetadata

        class Adapter(BaseRunner):
            def __init__(self) -> None:
                super().__init__(name=name)

            def activate_impl(self) -> None:
                runner.activate()
                runner.pin(pinned)

            def get_input_metadata_impl(self) -> Any:
                meta = TensorMetadata()
                for spec in runner.manifest.inputs:
                    if spec.name not in pinned:
                        shape = [d if isinstance(d, int) else -1 for d in spec.shape]
                        meta.add(spec.name, np.dtype(spec.dtype), shape)
                return meta

            def infer_impl(self, feed_dict: dict) -> dict:
                t0 = time.perf_counter()
                out = {k: np.ascontiguousarray(v) for k, v in runner.infer(feed_dict).items()}
                self.inference_time = time.perf_counter() - t0
                return out

            def deactivate_impl(self) -> None:
                runner.deactivate()

        return Adapter()


def run(out_dir: Path, onnx_dir: Path) -> dict[str, Any]:
    from vivify.engines.avatar.default_avatar import default_portrait_path
    from vivify.engines.avatar.pack import AvatarPreparer
    from vivify.engines.render.renderer import Renderer
    from vivify.export.engine_export import export_renderer, inspect

    out_dir.mkdir(parents=True, exist_ok=True)
    export_renderer(onnx_dir)
    manifest = ModelManifest.load(onnx_dir / "renderer.json")
    report: dict[str, Any] = {"inspection": inspect(manifest.onnx_path),
                              "tolerances": {"min_psnr_db": MIN_PSNR_DB, "atol": ATOL,
                                             "atol_fp16": ATOL_FP16,
                                             "error_quantile": ERROR_QUANTILE}}
    report["inspection"].pop("polygraphy_summary", None)
    pack = AvatarPreparer().prepare(default_portrait_path())
    motions = golden_motions()
    reference = Renderer(pack)
    golden = np.stack([reference.render(m).image for m in motions])
    bank = build_bank([pack])
    feeds = renderer_feeds(bank, motions)
    batch_feeds = {k: v for k, v in feeds.items() if k not in BANK_INPUTS}
    pinned = {k: feeds[k] for k in BANK_INPUTS}
    runners = runners_here(manifest)
    clips: dict[str, np.ndarray] = {}
    golden_report: dict[str, Any] = {}
    for name, runner in runners.items():
        with runner:
            runner.pin(pinned)
            t0 = time.perf_counter()
            frames = to_uint8(runner.infer(batch_feeds)["image"])
            seconds = time.perf_counter() - t0
        clips[name] = frames
        values = [psnr(g, f) for g, f in zip(golden, frames, strict=True)]
        golden_report[name] = {"min_psnr_db": min(values), "mean_psnr_db": float(np.mean(values)),
                               "frames": len(values), "seconds": seconds,
                               "passed": bool(min(values) >= MIN_PSNR_DB)}
    report["golden_clip"] = golden_report
    report["comparator"] = compare(runners, pinned, batch_feeds)
    _contact_sheet(golden, clips, out_dir / "golden_clip.jpg")
    report["passed"] = (all(g["passed"] for g in golden_report.values())
                        and report["comparator"].get("passed", True)
                        and not report["inspection"]["not_tensorrt_native"])
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def compare(runners: dict[str, Runner], pinned: dict[str, np.ndarray],
            feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Polygraphy Comparator over all runners on the clip's feeds (split in two batches)."""
    try:
        from polygraphy.comparator import Comparator
        from polygraphy.comparator.compare import SimpleCompareFunc
    except ImportError:
        return {"skipped": "polygraphy not installed (pip install polygraphy)"}
    n = len(feeds["motion"])
    loader = [{k: v[i:i + n // 2 + 1] for k, v in feeds.items()}
              for i in range(0, n, n // 2 + 1)]
    adapters = [_PolygraphyAdapter.make(r, name, pinned) for name, r in runners.items()]
    results = Comparator.run(adapters, data_loader=loader)
    pairs: dict[str, Any] = {}
    passed = True
    names = list(runners)
    ordered = list(results.items())
    ref = ordered[0][1]
    for name, iterations in ordered[1:]:
        atol = ATOL_FP16 if name in ("tensorrt", "ort-tensorrt") else ATOL
        func = SimpleCompareFunc(atol=atol, rtol=0.0, check_error_stat="quantile",
                                  error_quantile=ERROR_QUANTILE)
        ok = all(bool(func(r, o)) for r, o in zip(ref, iterations, strict=True))
        worst = max(float(np.abs(r["image"] - o["image"]).max())
                    for r, o in zip(ref, iterations, strict=True))
        differ = max(float(np.mean(r["image"] != o["image"]))
                     for r, o in zip(ref, iterations, strict=True))
        pairs[f"{names[0]} vs {name}"] = {"passed": ok, "atol": atol, "max_abs": worst,
                                          "fraction_pixels_differing": differ}
        passed &= ok
    return {"pairs": pairs, "passed": passed}


def _contact_sheet(golden: np.ndarray, clips: dict[str, np.ndarray], path: Path) -> None:
    import cv2

    picks = [0, 6, 12, 18, 24]
    rows = [np.concatenate([golden[i] for i in picks], axis=1)]
    rows += [np.concatenate([c[i] for i in picks], axis=1) for c in clips.values()]
    sheet = cv2.resize(np.concatenate(rows, axis=0), None, fx=0.35, fy=0.35,
                       interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("artifacts/parity"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(1)
    report = run(args.out, args.out / "onnx")
    print(json.dumps({k: report[k] for k in ("golden_clip", "comparator", "passed")}, indent=2,
                     default=str))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
