"""``vivify export``: write engine artifacts (ONNX + manifest with sha256) to a directory.

Kept free of torch at import time (argparse only) because ``streamer/cli/main.py`` registers it;
torch and onnx load only when the command runs (they come with the ``export`` extra).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        import torch
    except ImportError:
        print("vivify export needs torch and onnx: pip install -e '.[export]'")
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


def add_export_parser(sub: Any) -> None:
    """Register ``vivify export`` on the CLI's subparsers."""
    p = sub.add_parser("export", help="export engine artifacts (renderer ONNX + manifest)")
    p.add_argument("--out", default="artifacts/engines",
                   help="directory for <stage>.onnx + <stage>.json (default artifacts/engines)")
    p.add_argument("--size", type=int, default=512, help="crop size the renderer graph is for")
    p.add_argument("--grid-step", type=int, default=8, help="flow grid spacing, pixels")
    p.add_argument("--with-generator", action="store_true",
                   help="also copy the committed motion generator (checked by its manifest)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads while tracing")
    p.set_defaults(func=_cmd_export)
