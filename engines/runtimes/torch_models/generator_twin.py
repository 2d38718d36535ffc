"""The torch twin of the committed motion generator, with its weights read from the ONNX file.

Why: ``models/motion_generator.onnx`` is the only copy of the distilled student's weights that
ships (the ``student.pt`` checkpoint is a training artifact in ``artifacts/``, not committed),
but the GPU runtime ``torch-cuda`` (``engines/runtimes/torch_runner.py``) needs an
``nn.Module``. :class:`GeneratorTwin` rebuilds the student
(:class:`~vivify.engines.runtimes.torch_models.generator.Student`) from the manifest's
``config`` and fills it from the ONNX initializers, so the twin and the ONNX graph are the same
model by construction (``tests/test_generator_twin.py`` measures the difference against ONNX
Runtime).

How ``torch.onnx.export`` stored the weights (inspected in the committed file, and handled
generally rather than by listing its names):

* most initializers keep their ``state_dict`` name (``flow.pos``, ``flow.ctrl.weight``, …);
  ``Gemm`` nodes read those directly (``transB=1``: the Linear weight as stored);
* a Linear applied to a 3-D input became ``MatMul`` + ``Add``; constant folding stored the
  *transposed* weight under a generated name (``onnx::MatMul_1027``). Its module is found from
  the bias the following ``Add`` reads (``flow.x_in.bias`` → ``flow.x_in.weight`` = Bᵀ);
* the second Euler step's copies of those MatMul weights are ``Identity`` aliases;
* ``flow.null_audio`` is not in the graph: the student runs the conditional branch only
  (guidance is distilled in), so the exporter pruned it. It is left at its initial value;
  so is ``flow.frame_head``, the auxiliary frame-class head of a ``closure_head`` model, which
  only trains the encoder.

Any other parameter or buffer without a match, a shape mismatch, or two sources disagreeing is
an error naming the key. The ONNX file's ``config`` metadata must equal the config given, so a
manifest can never pair a config with another model's weights.

Device: ``vivify.engines.runtimes.torch_models.generator``
creates a few tensors inside ``forward`` without a
device (the Euler
time grid, the timestep frequencies). :meth:`GeneratorTwin.forward` runs the same code under a
``torch.device`` context, so on CUDA they are made on the GPU (no host tensors, nothing copied
while a CUDA graph is captured) without changing the exported model's code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from vivify.engines.motion.generator_config import GeneratorConfig
from vivify.engines.runtimes.torch_models.generator import MotionFlow, Student

# Parameters the exported graph does not contain, with the reason (see the module docstring).
NOT_IN_GRAPH = {
    "flow.null_audio": "unconditional branch only; the student's graph never reads it",
    "flow.frame_head.weight": "auxiliary training head (closure_head); sampling never reads it",
    "flow.frame_head.bias": "auxiliary training head (closure_head); sampling never reads it",
}


class TwinMismatchError(ValueError):
    """The ONNX file's weights cannot be mapped onto the twin (names, shapes or config)."""


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every initializer by name, plus ``Identity`` outputs that alias one (chains resolved)."""
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    changed = True
    while changed:
        changed = False
        for node in model.graph.node:
            if (node.op_type == "Identity" and node.input[0] in values
                    and node.output[0] not in values):
                values[node.output[0]] = values[node.input[0]]
                changed = True
    return values


def onnx_state_dict(model: onnx.ModelProto, keys: Mapping[str, tuple[int, ...]]
                    ) -> dict[str, np.ndarray]:
    """Map the graph's initializers onto ``keys`` (state_dict name → shape) of the twin.

    Raises :class:`TwinMismatchError` for a missing key (other than :data:`NOT_IN_GRAPH`), a
    shape mismatch, or two graph nodes implying different values for one key.
    """
    values = _initializers(model)
    found: dict[str, np.ndarray] = {}

    def put(key: str, value: np.ndarray, origin: str) -> None:
        if key not in keys:
            return
        if tuple(value.shape) != tuple(keys[key]):
            raise TwinMismatchError(f"{key}: ONNX {origin} has shape {tuple(value.shape)}, "
                                    f"the twin wants {tuple(keys[key])}")
        if key in found and not np.array_equal(found[key], value):
            raise TwinMismatchError(f"{key}: two graph nodes give different values ({origin})")
        found[key] = value

    for name, value in values.items():
        put(name, value, f"initializer {name!r}")
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in model.graph.node:
        # Linear as MatMul(x, Wᵀ) + Add(b), or Gemm(x, W or Wᵀ, b) with a generated weight name.
        if node.op_type == "MatMul" and len(node.input) == 2:
            weight, transposed = node.input[1], True
            biases = [i for c in consumers.get(node.output[0], []) if c.op_type == "Add"
                      for i in c.input if i.endswith(".bias") and i in values]
        elif node.op_type == "Gemm" and len(node.input) == 3:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            weight, transposed = node.input[1], not trans_b
            biases = [node.input[2]] if node.input[2].endswith(".bias") else []
        else:
            continue
        if weight in keys or weight not in values or len(biases) != 1:
            continue
        key = biases[0][: -len(".bias")] + ".weight"
        w = values[weight]
        put(key, np.ascontiguousarray(w.T if transposed else w),
            f"{node.op_type} {node.name!r} weight {weight!r} (via {biases[0]})")
    missing = sorted(k for k in keys if k not in found and k not in NOT_IN_GRAPH)
    if missing:
        raise TwinMismatchError(f"no ONNX initializer matches {missing} (looked for exact "
                                "names, Identity aliases, and MatMul/Gemm weights named by the "
                                "bias their Add reads)")
    return found


def _onnx_config(model: onnx.ModelProto) -> dict[str, Any] | None:
    meta = {p.key: p.value for p in model.metadata_props}
    return json.loads(meta["config"]) if "config" in meta else None


class GeneratorTwin(Student):
    """:class:`~vivify.engines.runtimes.torch_models.generator.Student` with the ONNX file's
    weights; forward =
    the ONNX graph.

    ``forward(mel, past, controls, noise) → motion`` in the ONNX inputs' order and shapes:
    (B, 4T, 40), (B, K, 19), (B, 7), (B, W, 19) → (B, W, 19), raw rig units.
    """

    def forward(self, mel: torch.Tensor, past: torch.Tensor, controls: torch.Tensor,
                noise: torch.Tensor) -> torch.Tensor:
        with torch.device(noise.device):  # the sampler's own constants on the inputs' device
            return super().forward(mel, past, controls, noise)

    @classmethod
    def from_onnx(cls, onnx_path: Path | str, config: Mapping[str, Any] | None = None
                  ) -> GeneratorTwin:
        """Build the twin for ``onnx_path``; ``config`` (a manifest's) must match the file's."""
        model = onnx.load(str(onnx_path))
        stored = _onnx_config(model)
        given = dict(config or {})
        if given and stored is not None and given != stored:
            diff = sorted(k for k in set(given) | set(stored) if given.get(k) != stored.get(k))
            raise TwinMismatchError(
                f"{onnx_path} was exported with another config (differs in {diff}); pass the "
                "ONNX file that belongs to this manifest (GeneratorTwin.from_manifest)")
        cfg_dict = given or stored
        if not cfg_dict:
            raise TwinMismatchError(f"{onnx_path} has no config metadata and none was given")
        twin = cls(MotionFlow(GeneratorConfig.from_dict(dict(cfg_dict))))
        own = twin.state_dict()
        weights = onnx_state_dict(model, {k: tuple(v.shape) for k, v in own.items()})
        twin.load_state_dict({**own, **{k: torch.from_numpy(v.copy()) for k, v in
                                        weights.items()}})
        return twin.eval()

    @classmethod
    def from_manifest(cls, manifest: Any) -> GeneratorTwin:
        """TorchRunner's factory hook: the manifest's own ONNX file (any location) and config."""
        return cls.from_onnx(manifest.onnx_path, manifest.raw.get("config", {}))
