"""ONNX Runtime runners: CPU, CUDA execution provider, TensorRT execution provider.

Provider selection is explicit: asking for CUDA on a build without it is an error naming
``onnxruntime-gpu``, never a silent fall back to the CPU (ONNX Runtime itself falls back quietly
when CUDA libraries fail to load, so the session's providers are checked after creation too).
The TensorRT EP gets the same engine cache, fp16 switch and batch profile as the native
TensorRT runner, written as ONNX Runtime's provider options.

Pinned inputs on a GPU provider are bound once as device ``OrtValue``s (I/O binding): fed as
numpy arrays, ONNX Runtime would copy the renderer's avatar bank (~13 MB an avatar) to the GPU
on every call. The host copy stays for checking feeds against the manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vivify.engines.runtimes.base import Runner, engine_cache_dir
from vivify.engines.runtimes.errors import MissingRuntimeError
from vivify.engines.runtimes.manifest import ModelManifest
from vivify.engines.runtimes.profiles import ProfileConfig, profile_shapes

PROVIDERS = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}


@dataclass(frozen=True)
class OrtConfig:
    """How to build the session. ``threads`` = intra-op threads (1: sessions scale by batch)."""

    provider: str = "cpu"
    threads: int = 1
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    fp16: bool = True  # TensorRT EP only
    # TensorRT EP engines and timing cache: per user, not in whatever folder the server runs in
    cache_dir: Path = field(default_factory=lambda: engine_cache_dir("ort-trt-cache"))
    bind_pinned: bool | None = None  # pinned inputs as device OrtValues; None = on GPU providers

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {sorted(PROVIDERS)}, got {self.provider!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be ≥ 0, got {self.threads}")


def _shape_list(shapes: Mapping[str, tuple[int, ...]]) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in dims)}" for name, dims in shapes.items())


def provider_options(manifest: ModelManifest, config: OrtConfig) -> list[tuple[str, dict]]:
    """``providers=`` for ``InferenceSession``: names with their options, in priority order."""
    out: list[tuple[str, dict]] = []
    for name in PROVIDERS[config.provider]:
        opts: dict[str, Any] = {}
        if name == "TensorrtExecutionProvider":
            prof = profile_shapes(manifest, config.profile)
            cache = str(config.cache_dir)
            opts = {
                "trt_fp16_enable": config.fp16,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": cache,
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": cache,
                "trt_profile_min_shapes": _shape_list({k: v[0] for k, v in prof.items()}),
                "trt_profile_opt_shapes": _shape_list({k: v[1] for k, v in prof.items()}),
                "trt_profile_max_shapes": _shape_list({k: v[2] for k, v in prof.items()}),
            }
        out.append((name, opts))
    return out


def available_providers() -> tuple[str, ...]:
    try:
        import onnxruntime as ort
    except ImportError:
        return ()
    return tuple(ort.get_available_providers())


class OrtRunner(Runner):
    """One ``InferenceSession`` behind the runner interface."""

    def __init__(self, manifest: ModelManifest, config: OrtConfig | None = None) -> None:
        super().__init__(manifest)
        self.config = config or OrtConfig()
        self.runtime = f"ort-{self.config.provider}"
        self.session: Any = None
        self._bound: dict[str, Any] = {}  # pinned inputs as OrtValues on the provider's device

    @property
    def device(self) -> str:
        return "cpu" if self.config.provider == "cpu" else "cuda"

    @property
    def binds_pinned(self) -> bool:
        on = self.config.bind_pinned
        return self.config.provider != "cpu" if on is None else on

    def pin(self, feeds: Mapping[str, Any]) -> None:
        """Pin (host copies, for checks) and, with I/O binding, upload once to the device."""
        super().pin(feeds)
        if self.binds_pinned:
            import onnxruntime as ort

            for name, value in self._upload(feeds).items():
                self._bound[name] = ort.OrtValue.ortvalue_from_numpy(value, self.device, 0)

    def limits(self) -> dict[str, tuple[int, int]]:
        if self.config.provider != "tensorrt":
            return {}
        prof = self.config.profile
        return {name: (lo, hi) for name, (lo, _, hi) in prof.ranges(self.manifest).items()}

    def _activate(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingRuntimeError(self.runtime, "onnxruntime", str(exc)) from exc
        wanted = PROVIDERS[self.config.provider][0]
        if wanted not in ort.get_available_providers():
            raise MissingRuntimeError(self.runtime, "onnxruntime-gpu (CUDA 12 build)",
                                      f"{wanted} is not in this onnxruntime build "
                                      f"({', '.join(ort.get_available_providers())})")
        if self.config.provider == "tensorrt":
            self.config.cache_dir.mkdir(parents=True, exist_ok=True)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.config.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.manifest.onnx_path), sess_options=opts,
                                            providers=provider_options(self.manifest, self.config))
        if wanted not in self.session.get_providers():
            raise MissingRuntimeError(self.runtime, "onnxruntime-gpu with working CUDA/cuDNN",
                                      f"the session fell back to {self.session.get_providers()}")
        names = tuple(i.name for i in self.session.get_inputs())
        if set(names) != set(self.manifest.input_names):
            raise MissingRuntimeError(self.runtime, "a matching model",
                                      f"graph inputs {names} != manifest "
                                      f"{self.manifest.input_names}")

    def _deactivate(self) -> None:
        self._bound.clear()
        self.session = None

    def _infer(self, feeds: dict[str, Any]) -> dict[str, Any]:
        names = list(self.manifest.output_names)
        if not self._bound:
            outs = self.session.run(names, feeds)
            return {n: np.asarray(v) for n, v in zip(names, outs, strict=True)}
        binding = self.session.io_binding()
        for name, value in feeds.items():
            if name in self._bound:
                binding.bind_ortvalue_input(name, self._bound[name])
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in names:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding)
        return {n: np.asarray(v) for n, v in zip(names, binding.copy_outputs_to_cpu(),
                                                 strict=True)}
