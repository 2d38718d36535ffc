"""``vivify export``: write engine artifacts (ONNX + manifest with sha256) to a directory.

The parser lives here and ``vivify.export`` is imported only when the command runs: serving
never needs export/, and torch and onnx come with the ``export`` extra, which a serving
install does not have.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXPORT_EXTRA = "vivify export needs torch and onnx: pip install -e '.[export]'"


def cmd_export(args: argparse.Namespace) -> int:
    try:
        import onnx  # noqa: F401  (imported here only to say what is missing)
        import torch
    except ImportError as exc:
        print(f"{EXPORT_EXTRA} ({exc})", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    from vivify.engines.runtimes.renderer_bank import GraphGeometry
    from vivify.export.engine_export import copy_generator, export_renderer, inspect

    out = Path(args.out)
    geo = GraphGeometry(size=args.size, grid_step=args.grid_step)
    summary: dict[str, Any] = {}
    renderer = export_renderer(out, geo)
    report = inspect(out / renderer["file"])
    summary["renderer"] = {k: renderer[k] for k in ("file", "bytes", "sha256", "opset")}
    summary["renderer"]["inspection"] = {k: report[k] for k in
                                         ("checker", "not_tensorrt_native", "polygraphy")}
    if args.with_generator:
        gen = copy_generator(out)
        summary["generator"] = {k: gen[k] for k in ("file", "bytes", "sha256", "opset")}
    print(json.dumps(summary, indent=2))
    return 0 if not report["not_tensorrt_native"] else 1


def add_export_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``vivify export`` on the CLI's subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "export", help="export engine artifacts (renderer ONNX + manifest)")
    p.add_argument("--out", default="artifacts/engines",
                   help="directory for <stage>.onnx + <stage>.json (default artifacts/engines)")
    p.add_argument("--size", type=int, default=512, help="crop size the renderer graph is for")
    p.add_argument("--grid-step", type=int, default=8, help="flow grid spacing, pixels")
    p.add_argument("--with-generator", action="store_true",
                   help="also copy the committed motion generator (checked by its manifest)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads while tracing")
    p.set_defaults(func=cmd_export)
    return p
