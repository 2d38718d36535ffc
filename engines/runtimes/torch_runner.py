"""torch on CUDA with CUDA graphs: the GPU path that needs neither TensorRT nor onnxruntime-gpu.

The module is the *torch twin* the ONNX file was exported from, named by the manifest's
``torch_factory`` (``"package.module:callable"``; its ``from_manifest(manifest)`` or
``from_manifest_config(config)`` builds it), so ``engines`` never imports ``export`` or torch
at import time.

CUDA graphs, and why batches are bucketed: replaying a captured graph removes the per-kernel
launch cost that dominates small batches, but a graph is fixed to its input shapes. A server's
batch size changes every call (it is however many sessions were ready), and one graph per size
up to 64 would hold 64 sets of buffers. So a call's batch is padded up to the next *bucket*
(1, 2, 4, 8, 16, 32, 64 by default: at most 2× the rows, usually far less), rows repeated from
the last one so every padded input stays valid, and the outputs are sliced back. All graphs
share one memory pool (the way LLM servers capture many batch sizes): safe here because calls
never overlap (one runner, one call at a time) and every graph's inputs and outputs stay
allocated for the runner's life, so only scratch memory is shared. Pinned inputs (the avatar
bank) are uploaded once and captured by reference; pinning new ones drops the captured graphs.
Outputs stay on the GPU with ``infer_device`` (valid until the next call), and
``infer_uint8`` turns frames into uint8 before their one copy to the host.

``device="cpu"`` runs the same module eagerly on the CPU: that is how the plumbing, the
bucketing and parity are tested on a machine without a GPU.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vivify.engines.runtimes.base import Runner
from vivify.engines.runtimes.errors import MissingRuntimeError
from vivify.engines.runtimes.manifest import ModelManifest

log = logging.getLogger(__name__)

ModuleFactory = Callable[[ModelManifest], Any]


DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class TorchConfig:
    device: str = "cuda"
    cuda_graphs: bool = True
    threads: int = 1  # CPU threads when device == "cpu"
    warmup: int = 2  # eager calls on a side stream before capturing (cuDNN/cuBLAS autotune)
    batch_buckets: tuple[int, ...] = DEFAULT_BUCKETS  # CUDA-graph batch sizes (see above)
    bucket_on_cpu: bool = False  # pad to buckets without CUDA too (tests the padding here)

    def __post_init__(self) -> None:
        if not self.batch_buckets or list(self.batch_buckets) != sorted(set(self.batch_buckets)) \
                or self.batch_buckets[0] < 1:
            raise ValueError(f"batch_buckets must be increasing sizes ≥ 1, got "
                             f"{self.batch_buckets}")


def bucket_for(n: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds ``n`` rows."""
    for b in buckets:
        if b >= n:
            return b
    raise ValueError(f"batch {n} exceeds the largest CUDA-graph bucket {buckets[-1]}")


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
        if hasattr(target, "from_manifest"):  # needs the manifest itself (its ONNX weights)
            return target.from_manifest(m)
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
        self._pool: Any = None  # one CUDA-graph memory pool shared by every captured bucket
        self._batched_in = {sp.name for sp in manifest.inputs if sp.dynamic_axes.get(0) == "batch"}
        self._batched_out = {sp.name for sp in manifest.outputs
                             if sp.dynamic_axes.get(0) == "batch"}

    @property
    def uses_graphs(self) -> bool:
        return self.config.cuda_graphs and self.config.device.startswith("cuda")

    @property
    def buckets_batches(self) -> bool:
        return bool(self._batched_in) and (self.uses_graphs or self.config.bucket_on_cpu)

    def limits(self) -> dict[str, tuple[int, int]]:
        return {"batch": (1, self.config.batch_buckets[-1])} if self.buckets_batches else {}

    def pin(self, feeds: Any) -> None:
        """Pin inputs; graphs captured over the previously pinned tensors are dropped (they
        would otherwise keep reading the old ones), and re-captured on their next use."""
        super().pin(feeds)
        self._graphs.clear()

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
        self._pool = None
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

    def infer_uint8(self, feeds: dict[str, Any], name: str) -> np.ndarray:
        """Output ``name`` (float holding 0..255) rounded, clamped and cast to uint8 *on the
        device*, then copied to the host once: the frames' only trip off the GPU, at a quarter
        of float32's bytes (a 512² frame is 768 KiB instead of 3 MiB)."""
        out = self.infer_device(feeds)[name]
        with self._torch.no_grad():
            frames = out.round().clamp_(0, 255).to(self._torch.uint8)
        return np.ascontiguousarray(frames.cpu().numpy())

    def _infer(self, feeds: dict[str, Any]) -> dict[str, Any]:
        return {k: np.ascontiguousarray(v.detach().cpu().numpy())
                for k, v in self._run(feeds).items()}

    def _run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        torch = self._torch
        names = self.manifest.input_names
        with torch.no_grad():
            n = 0
            if self.buckets_batches:
                n = int(next(feeds[k] for k in names if k in self._batched_in).shape[0])
                feeds = self._padded(feeds, bucket_for(n, self.config.batch_buckets))
            if not self.uses_graphs:
                out = self._pack(self._module(*[self._to_device(feeds[k]) for k in names]))
            else:
                sig = tuple((k, tuple(feeds[k].shape)) for k in names)
                if sig not in self._graphs:
                    self._graphs[sig] = self._capture(feeds)
                graph, static, out = self._graphs[sig]
                for k in names:
                    if static[k] is not self._pinned.get(k):
                        static[k].copy_(self._to_device(feeds[k]), non_blocking=True)
                graph.replay()
            if n:
                out = {k: (v[:n] if k in self._batched_out else v) for k, v in out.items()}
            return out

    def _padded(self, feeds: dict[str, Any], bucket: int) -> dict[str, Any]:
        """Batched inputs padded to ``bucket`` rows by repeating the last row (still valid
        input: a real motion, a real avatar index); the rest as they are."""
        torch = self._torch
        out = dict(feeds)
        for k in self._batched_in:
            x = self._to_device(feeds[k])
            if x.shape[0] < bucket:
                x = torch.cat([x, x[-1:].expand(bucket - x.shape[0], *x.shape[1:])])
            out[k] = x
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
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self._pack(self._module(*args))
        log.info("%s: captured a CUDA graph for %s", self.manifest.name,
                 {n: tuple(v.shape) for n, v in static.items() if n not in self._pinned})
        return graph, static, out

    def _pack(self, result: Any) -> dict[str, Any]:
        outs = result if isinstance(result, tuple | list) else (result,)
        return dict(zip(self.manifest.output_names, outs, strict=True))
