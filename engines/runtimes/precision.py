"""Mixed precision for fp16 engines: geometry in fp32, pixels in fp16.

An fp16 engine is ~2× faster on the memory-bound image work, but the renderer graph also does
*geometry* in pixel units: keypoints, the thin-plate field, the Newton inversion (with a
Jacobian determinant compared against a small threshold) and the 512² sampling maps. fp16 has
a spacing of 0.25 at 256..512, so sampling positions would snap to quarter pixels (the CPU
renderer uses 1/32 px) and the inversion could lose its small determinants. So the nodes that
do not depend on any pixel input (``images``, ``palette``) are listed at export, stored in the
manifest (``fp32_layers``), and the TensorRT build asks for fp32 on the layers made from them
(precision constraints "prefer": TensorRT may still fall back where a layer has no fp32
kernel). Everything downstream of the images (the grid sample of the crop, the layer blends)
is free to run in fp16, where its 0..255 values lose at most a grey level before rounding.

The ONNX analysis needs ``onnx`` (export side); applying it needs only the names, so serving
reads them from the manifest. Neither part has run on a TensorRT build here (docs/engines.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

PIXEL_INPUTS = ("images", "palette")


def geometry_nodes(model: Any, pixel_inputs: Iterable[str] = PIXEL_INPUTS) -> list[str]:
    """Names of the ONNX nodes (in graph order) whose outputs do not depend on any pixel input."""
    tainted = set(pixel_inputs)
    out = []
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        if any(i in tainted for i in node.input if i):
            tainted.update(o for o in node.output if o)
        elif node.name:
            out.append(node.name)
    return out


def layer_matches(layer_name: str, nodes: set[str]) -> bool:
    """Whether a TensorRT layer was made from one of ``nodes``. The ONNX parser names a layer
    after its node, and the extra layers of one node after the node plus a suffix."""
    if layer_name in nodes:
        return True
    for sep in ("_", " ", ":", "."):
        head = layer_name.rsplit(sep, 1)[0]
        if head != layer_name and head in nodes:
            return True
    return False


def keep_fp32(network: Any, nodes: Iterable[str], trt: Any) -> int:
    """Ask for fp32 compute and outputs on every layer made from ``nodes``; returns how many.

    ``network`` is a TensorRT ``INetworkDefinition`` and ``trt`` the tensorrt module (passed in
    so this stays importable, and testable, without TensorRT)."""
    names = set(nodes)
    floats = {trt.float32, trt.float16}
    kept = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        float_outputs = [j for j in range(layer.num_outputs)
                         if layer.get_output(j).dtype in floats]
        if not float_outputs or not layer_matches(layer.name, names):
            continue  # shape and index arithmetic has no precision to keep
        layer.precision = trt.float32
        for j in float_outputs:
            layer.set_output_type(j, trt.float32)
        kept += 1
    log.info("fp16 engine: %d of %d layers kept in fp32 (geometry)", kept, network.num_layers)
    return kept
