"""Engine artifacts: the renderer graph → ONNX + manifest, the generator alongside, inspection.

``vivify export`` (and ``make parity``) call into here. The renderer ONNX holds no avatar: the
avatar bank is an input (``engines/runtimes/renderer_bank.py`` says why), so one file per crop
size serves every portrait, and it is small (tens of KB) — but it is still written to a chosen
directory (``artifacts/engines`` by default, gitignored) rather than committed, because it is
made from code in a second.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from vivify.engines.motion.generator import DEFAULT_MANIFEST, load_manifest, sha256_file
from vivify.engines.motion.vector import RIG_VERSION
from vivify.engines.runtimes.precision import geometry_nodes
from vivify.engines.runtimes.renderer_bank import (
    BANK_INPUTS,
    BANK_VERSION,
    INPUT_DTYPES,
    GraphGeometry,
    renderer_feeds,
)
from vivify.engines.runtimes.torch_models.renderer_graph import RendererGraph

log = logging.getLogger(__name__)

OPSET = 17  # GridSample needs ≥ 16; TensorRT ≥ 8.5 parses it natively
INPUT_NAMES = ("motion", "avatar", *BANK_INPUTS)
OUTPUT_NAMES = ("image",)
DEFAULT_OUT = Path("artifacts/engines")
TORCH_FACTORY = "vivify.engines.runtimes.torch_models.renderer_graph:RendererGraph"


def _example_bank(geo: GraphGeometry, avatars: int = 2) -> dict[str, np.ndarray]:
    """Shape-correct random bank for tracing (values do not matter to the graph's structure)."""
    rng = np.random.default_rng(0)
    shapes = geo.input_shapes()
    bank = {}
    for name in BANK_INPUTS:
        dims = [avatars if d == "avatars" else int(d) for d in shapes[name]]
        bank[name] = rng.random(dims, dtype=np.float32)
    bank["rig_params"][:, 7] = 100.0  # eye distance
    return bank


def export_renderer(out_dir: Path = DEFAULT_OUT, geometry: GraphGeometry | None = None,
                    name: str = "renderer") -> dict[str, Any]:
    """Trace :class:`RendererGraph` to ``<out_dir>/<name>.onnx`` and write its manifest."""
    geo = geometry or GraphGeometry()
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{name}.onnx"
    graph = RendererGraph(geo).eval()
    feeds = renderer_feeds(_example_bank(geo), np.zeros((2, 19), np.float32),
                           np.array([0, 1], np.int32))
    args = tuple(torch.from_numpy(feeds[k]) for k in INPUT_NAMES)
    dyn: dict[str, dict[int, str]] = {k: {0: "avatars"} for k in BANK_INPUTS}
    dyn.update({"motion": {0: "batch"}, "avatar": {0: "batch"}, "image": {0: "batch"}})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about constants: all intended
        torch.onnx.export(graph, args, str(onnx_path), dynamo=False,
                          input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                          dynamic_axes=dyn, opset_version=OPSET, do_constant_folding=True)
    model = onnx.load(str(onnx_path))
    # The tracer leaves the output's spatial dims symbolic; they are static (S, S, 3).
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    for dim, side in zip(out_dims[1:], (geo.size, geo.size, 3), strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = side
    for key, value in (("geometry", json.dumps(asdict(geo))), ("rig_version", RIG_VERSION),
                       ("bank_version", BANK_VERSION)):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(onnx_path))
    manifest = {
        "name": name,
        "file": onnx_path.name,
        "sha256": sha256_file(onnx_path),
        "bytes": onnx_path.stat().st_size,
        "rig_version": RIG_VERSION,
        "bank_version": BANK_VERSION,
        "opset": OPSET,
        "config": asdict(geo),
        "inputs": geo.input_shapes(),
        "outputs": geo.output_shapes(),
        "dtypes": dict(INPUT_DTYPES),
        "operators": sorted({n.op_type for n in model.graph.node}),
        # fp16 TensorRT engines keep these (no pixel input upstream) in fp32: precision.py
        "fp32_layers": geometry_nodes(model),
        "torch_factory": TORCH_FACTORY,
        "twin_source_sha256": twin_source_sha256(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
    }
    (out_dir / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def twin_source_sha256() -> str:
    """sha256 of the torch twin's source: an export made from other code is stale (the torch
    runner would run today's code while ONNX Runtime and TensorRT run the old file)."""
    import vivify.engines.runtimes.torch_models.renderer_graph as twin

    return sha256_file(Path(twin.__file__))


def is_current(manifest_path: Path) -> bool:
    """Whether ``manifest_path`` exists and was exported from the twin's current source."""
    try:
        raw = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return False
    return bool(raw.get("twin_source_sha256") == twin_source_sha256())


def copy_generator(out_dir: Path, manifest: Path = DEFAULT_MANIFEST) -> dict[str, Any]:
    """Put the committed generator (checked against its manifest) next to the renderer."""
    data = load_manifest(manifest)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(manifest.parent / data["file"], out_dir / data["file"])
    shutil.copyfile(manifest, out_dir / manifest.name)
    return data


# TensorRT 10 parses these natively (docs: onnx-tensorrt operators.md); anything else in the
# graph would need a plugin, which this project refuses to ship.
TENSORRT_NATIVE = frozenset({
    "Abs", "Add", "And", "Cast", "Ceil", "Clip", "Concat", "Constant", "ConstantOfShape",
    "Conv", "Cos", "Div", "Equal", "Exp", "Expand", "Floor", "Gather", "GatherElements",
    "Greater", "GreaterOrEqual", "GridSample", "Less", "LessOrEqual", "MatMul", "Max", "Min",
    "Mod", "Mul", "Neg", "Not", "Or", "Pad", "Pow", "ReduceL2", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceSum", "Relu", "Reshape", "Resize", "Round", "Shape", "Sin", "Slice",
    "Sqrt", "Squeeze", "Sub", "Tile", "TopK", "Transpose", "Unsqueeze", "Where",
    # the generator's transformer
    "Erf", "Gemm", "LayerNormalization", "ReduceSumSquare", "Sigmoid", "Softmax", "Tanh",
    "Range", "Split",
})


def inspect(onnx_path: Path) -> dict[str, Any]:
    """onnx.checker + the operator set (vs TensorRT's native list) + Polygraphy's inspection.

    Polygraphy is optional (``pip install polygraphy``); without it the report says so.
    """
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model, full_check=True)
    ops = sorted({n.op_type for n in model.graph.node})
    report: dict[str, Any] = {
        "file": str(onnx_path),
        "checker": "passed",
        "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "operators": ops,
        "not_tensorrt_native": [o for o in ops if o not in TENSORRT_NATIVE],
        "loops_or_custom": [n.op_type for n in model.graph.node if n.op_type in
                            ("Loop", "Scan", "If") or n.domain not in ("", "ai.onnx")],
    }
    try:
        from polygraphy.backend.onnx import onnx_from_path
        from polygraphy.backend.onnx.util import str_from_onnx
    except ImportError:
        report["polygraphy"] = "not installed (pip install polygraphy)"
        return report
    text = str_from_onnx(onnx_from_path(str(onnx_path)), show_layers=False)
    report["polygraphy"] = "inspected"
    report["polygraphy_summary"] = text.strip().splitlines()[:40]
    return report
