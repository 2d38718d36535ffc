"""``--runtime auto``: pick the best runtime present, say why, and build its runner.

Order (fastest first, as far as each is expected to go on an NVIDIA GPU): native TensorRT (fp16
engine, our cache) → ONNX Runtime's TensorRT EP → torch CUDA with CUDA graphs → ONNX Runtime
CUDA EP → ONNX Runtime CPU. Availability is probed without importing torch or TensorRT unless
a GPU is visible, so ``auto`` on a CPU box costs nothing and serving stays torch-free.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vivify.engines.runtimes.base import Runner
from vivify.engines.runtimes.errors import MissingRuntimeError
from vivify.engines.runtimes.manifest import ModelManifest
from vivify.engines.runtimes.ort_runner import OrtConfig, OrtRunner, available_providers

log = logging.getLogger(__name__)

RUNTIMES = ("tensorrt", "ort-tensorrt", "torch-cuda", "ort-cuda", "ort-cpu")
# What to install for each, when it is asked for by name and missing.
PACKAGES = {
    "tensorrt": "tensorrt + polygraphy (NVIDIA's wheel on a CUDA host; pip install polygraphy)",
    "ort-tensorrt": "onnxruntime-gpu with TensorRT libraries",
    "torch-cuda": "torch with CUDA (and the export extra for the torch twin)",
    "ort-cuda": "onnxruntime-gpu (the `gpu` extra)",
    "ort-cpu": "onnxruntime",
}


@dataclass(frozen=True)
class Availability:
    """What this machine has, as far as the runtimes care."""

    gpu_visible: bool = False
    ort_providers: tuple[str, ...] = ()
    tensorrt: bool = False
    polygraphy: bool = False
    torch_cuda: bool = False

    def why_not(self, runtime: str, manifest: ModelManifest | None = None) -> str | None:
        """None if ``runtime`` can run here, else the reason it cannot."""
        gpu = None if self.gpu_visible else "no NVIDIA GPU visible"
        if runtime == "tensorrt":
            return gpu or (None if self.tensorrt and self.polygraphy else
                           "tensorrt/polygraphy not importable")
        if runtime == "ort-tensorrt":
            return gpu or (None if "TensorrtExecutionProvider" in self.ort_providers
                           else "onnxruntime has no TensorrtExecutionProvider")
        if runtime == "torch-cuda":
            if manifest is not None and not manifest.raw.get("torch_factory"):
                return "the manifest names no torch twin"
            return gpu or (None if self.torch_cuda else "torch has no CUDA")
        if runtime == "ort-cuda":
            return gpu or (None if "CUDAExecutionProvider" in self.ort_providers
                           else "onnxruntime has no CUDAExecutionProvider")
        if runtime == "ort-cpu":
            return None if "CPUExecutionProvider" in self.ort_providers else "no onnxruntime"
        raise ValueError(f"unknown runtime {runtime!r}; known: auto, {', '.join(RUNTIMES)}")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def probe() -> Availability:
    """Look at this machine. torch is imported only when a GPU is visible and torch exists."""
    gpu = shutil.which("nvidia-smi") is not None or Path("/dev/nvidiactl").exists()
    torch_cuda = False
    if gpu and _importable("torch"):
        import torch

        torch_cuda = bool(torch.cuda.is_available())
    return Availability(gpu_visible=gpu, ort_providers=available_providers(),
                        tensorrt=gpu and _importable("tensorrt"),
                        polygraphy=_importable("polygraphy"), torch_cuda=torch_cuda)


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str
    reason: str
    skipped: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def select_runtime(preference: str = "auto", manifest: ModelManifest | None = None,
                   availability: Availability | None = None) -> RuntimeChoice:
    """The runtime to use; ``auto`` takes the first of :data:`RUNTIMES` that can run here."""
    have = availability or probe()
    if preference != "auto":
        reason = have.why_not(preference, manifest)
        if reason is not None:
            raise MissingRuntimeError(preference, PACKAGES[preference], reason)
        return RuntimeChoice(preference, "asked for by name")
    skipped: list[tuple[str, str]] = []
    for name in RUNTIMES:
        reason = have.why_not(name, manifest)
        if reason is None:
            why = "best available" + (
                "; skipped " + "; ".join(f"{n}: {r}" for n, r in skipped) if skipped else "")
            log.info("runtime auto → %s (%s)", name, why)
            return RuntimeChoice(name, why, tuple(skipped))
        skipped.append((name, reason))
    raise MissingRuntimeError("auto", "onnxruntime", "no runtime can run here: "
                              + "; ".join(f"{n}: {r}" for n, r in skipped))


def create_runner(manifest: ModelManifest, runtime: str = "auto",
                  availability: Availability | None = None, threads: int = 1,
                  **options: Any) -> Runner:
    """Build (not activate) the runner for ``runtime``; ``threads`` applies to CPU work,
    other options go to the chosen runtime's config."""
    choice = select_runtime(runtime, manifest, availability)
    name = choice.runtime
    if name.startswith("ort-"):
        return OrtRunner(manifest, OrtConfig(provider=name[4:], threads=threads, **options))
    if name == "tensorrt":
        from vivify.engines.runtimes.tensorrt_runner import TensorRTConfig, TensorRTRunner

        return TensorRTRunner(manifest, TensorRTConfig(**options))
    from vivify.engines.runtimes.torch_runner import TorchConfig, TorchRunner

    return TorchRunner(manifest, TorchConfig(device="cuda", **options))
