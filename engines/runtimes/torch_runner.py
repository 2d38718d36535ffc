"""torch on CUDA with CUDA graphs: the GPU path that needs neither TensorRT nor onnxruntime-gpu.

The module is the *torch twin* the ONNX file was exported from, named by the manifest's
``torch_factory`` (``"package.module:callable"``, called with the manifest's ``config``), so
``engines`` never imports ``export`` or torch at import time. Per input-shape signature the
first call captures a CUDA graph over static input buffers; later calls copy the inputs in and
replay it, which removes the per-kernel launch cost that dominates small batches. Pinned inputs
(the avatar bank) are uploaded once and captured by reference. Outputs stay on the GPU when
``infer_device`` is used (the next stage or the encoder reads them there); ``infer`` copies to
host for the common interface.

``device="cpu"`` runs the same module eagerly on the CPU: that is how the plumbing and parity
are tested on a machine without a GPU.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.runtimes.base import Runner
from engines.runtimes.errors import MissingRuntimeError
from engines.runtimes.manifest import ModelManifest

log = logging.getLogger(__name__)

ModuleFactory = Callable[[ModelManifest], Any]


@dataclass(frozen=True)
class TorchConfig:
    device: str = "cuda"
    cuda_graphs: bool = True
    threads: int = 1  # CPU threads when device == "cpu"
    warmup: int = 2  # eager calls on a side stream before capturing (cuDNN/cuBLAS autotune)


def resolve_factory(manifest: ModelManifest) -> ModuleFactory:
    """The manifest's ``torch_factory`` as a callable ``manifest → nn.Module``."""
    spec = manifest.raw.get("torch_factory")
    if not spec or ":" not in spec:
        raise MissingRuntimeError("torch-cuda", "a torch twin",
                                  f"manifest {manifest.path} names no torch_factory")
    module_name, attr = spec.split(":", 1)
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise MissingRuntimeError("torch-cuda", f"{module_name} (the export extra: "
                                  "pip install -e '.[export]')", str(exc)) from exc

    def build(m: ModelManifest) -> Any:
        if hasattr(target, "from_manifest_config"):
            return target.from_manifest_config(m.raw.get("config", {}))
        return target()

    return build


class TorchRunner(Runner):
    """The torch twin behind the runner interface, CUDA-graph replayed on GPU."""

    def __init__(self, manifest: ModelManifest, config: TorchConfig | None = None,
                 factory: ModuleFactory | None = None) -> None:
        super().__init__(manifest)
        self.config = config or TorchConfig()
        self.runtime = f"torch-{self.config.device}"
        self._factory = factory
        self._torch: Any = None
        self._module: Any = None
        self._graphs: dict[tuple, tuple[Any, dict[str, Any], Any]] = {}

    def _activate(self) -> None:
        try:
            import torch
        except ImportError as exc:
            raise MissingRuntimeError(self.runtime, "torch (pip install torch)", str(exc)) from exc
        if self.config.device.startswith("cuda") and not torch.cuda.is_available():
            raise MissingRuntimeError(self.runtime, "torch with CUDA and an NVIDIA GPU",
                                      f"torch {torch.__version__} sees no CUDA device")
        if self.config.device == "cpu":
            torch.set_num_threads(self.config.threads)
        factory = self._factory or resolve_factory(self.manifest)
        self._torch = torch
        self._module = factory(self.manifest).eval().to(self.config.device)

    def _deactivate(self) -> None:
        self._graphs.clear()
        self._module = None
        if self._torch is not None and self.config.device.startswith("cuda"):
            self._torch.cuda.empty_cache()

    def _upload(self, feeds: Any) -> dict[str, Any]:
        return {k: self._to_device(v) for k, v in feeds.items()}

    def _to_device(self, value: Any) -> Any:
        torch = self._torch
        if isinstance(value, torch.Tensor):
            return value.to(self.config.device, non_blocking=True)
        return torch.from_numpy(np.ascontiguousarray(value)).to(self.config.device,
                                                                 non_blocking=True)

    def infer_device(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Like ``infer`` but returns device tensors (valid until the next call)."""
        self._require_active()
        merged = {**self._pinned, **feeds}
        self.manifest.check_feeds(merged, self.limits())
        return self._run(merged)

    def _infer(self, feeds: dict[str, Any]) -> dict[str, Any]:
        return {k: np.ascontiguousarray(v.detach().cpu().numpy())
                for k, v in self._run(feeds).items()}

    def _run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        torch = self._torch
        names = self.manifest.input_names
        use_graphs = self.config.cuda_graphs and self.config.device.startswith("cuda")
        with torch.no_grad():
            if not use_graphs:
                args = [self._to_device(feeds[n]) for n in names]
                return self._pack(self._module(*args))
            sig = tuple((n, tuple(feeds[n].shape)) for n in names)
            if sig not in self._graphs:
                self._graphs[sig] = self._capture(feeds)
            graph, static, out = self._graphs[sig]
            for n in names:
                if static[n] is not self._pinned.get(n):
                    static[n].copy_(self._to_device(feeds[n]), non_blocking=True)
            graph.replay()
            return out

    def _capture(self, feeds: dict[str, Any]) -> tuple[Any, dict[str, Any], Any]:
        """Warm up on a side stream, then capture one CUDA graph for this shape signature."""
        torch = self._torch
        static = {n: (self._pinned[n] if n in self._pinned else self._to_device(feeds[n]).clone())
                  for n in self.manifest.input_names}
        args = [static[n] for n in self.manifest.input_names]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.config.warmup):
                self._module(*args)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._pack(self._module(*args))
        log.info("%s: captured a CUDA graph for %s", self.manifest.name,
                 {n: tuple(v.shape) for n, v in static.items() if n not in self._pinned})
        return graph, static, out

    def _pack(self, result: Any) -> dict[str, Any]:
        outs = result if isinstance(result, tuple | list) else (result,)
        return dict(zip(self.manifest.output_names, outs, strict=True))
