"""Native TensorRT, built on the user's machine with Polygraphy's loaders, cached per GPU.

Why build here and not ship engines: a TensorRT engine only runs on the TensorRT version and
GPU it was built for (the anchors' users hit exactly this). So the engine is built from the
ONNX file on first use — fp16, one optimisation profile covering batch 1…max, a persistent
timing cache to make rebuilds fast — and cached under a key made of everything that invalidates
it: the ONNX sha256, the TensorRT version, the GPU name and compute capability, and the build
options. Change any of them and the key changes, so the engine is rebuilt, never misused.

``tensorrt`` and ``polygraphy`` are imported only inside :meth:`TensorRTRunner.activate`; their
absence is a :class:`MissingRuntimeError` naming the package.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vivify.engines.runtimes.base import Runner, engine_cache_dir
from vivify.engines.runtimes.errors import MissingRuntimeError
from vivify.engines.runtimes.manifest import ModelManifest
from vivify.engines.runtimes.profiles import ProfileConfig, profile_shapes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuIdentity:
    """What an engine is specific to, besides TensorRT's version."""

    name: str
    compute_capability: str  # "9.0"


@dataclass(frozen=True)
class EngineCacheKey:
    """Everything that makes a cached engine valid; ``digest`` names the file."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    fp16: bool
    profile: str
    precision: str = "all"  # which layers fp16 may touch: "all", or "pixels" (fp32 geometry)

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:24]


@dataclass(frozen=True)
class TensorRTConfig:
    """Build options; ``cache_dir`` holds engines and the shared timing cache."""

    fp16: bool = True
    fp32_geometry: bool = True  # fp16 engines keep the manifest's fp32_layers in fp32
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    cache_dir: Path = field(default_factory=lambda: engine_cache_dir("tensorrt"))  # per user
    workspace_bytes: int = 4 << 30


def engine_paths(cache_dir: Path, manifest_name: str, key: EngineCacheKey) -> tuple[Path, Path]:
    """(engine file, its key sidecar) for a key."""
    stem = f"{manifest_name}-{key.digest()}"
    return cache_dir / f"{stem}.engine", cache_dir / f"{stem}.json"


def cached_engine(cache_dir: Path, manifest_name: str, key: EngineCacheKey) -> Path | None:
    """The cached engine for exactly this key, or None (then it must be (re)built)."""
    engine, sidecar = engine_paths(cache_dir, manifest_name, key)
    if not engine.is_file() or not sidecar.is_file():
        return None
    try:
        stored = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    return engine if stored == asdict(key) else None


def gpu_identity() -> GpuIdentity:
    """Name and compute capability of GPU 0, from ``nvidia-smi`` (no CUDA Python needed)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise MissingRuntimeError("tensorrt", "an NVIDIA driver (nvidia-smi)", "no GPU found")
    out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20, check=False)
    line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else ""
    if "," not in line:
        raise MissingRuntimeError("tensorrt", "a working NVIDIA driver",
                                  f"nvidia-smi said {out.stderr.strip() or line!r}")
    name, cc = (s.strip() for s in line.split(",", 1))
    return GpuIdentity(name=name, compute_capability=cc)


class TensorRTRunner(Runner):
    """Polygraphy ``TrtRunner`` over an engine built (or loaded from the cache) on activate."""

    runtime = "tensorrt"

    def __init__(self, manifest: ModelManifest, config: TensorRTConfig | None = None,
                 gpu: GpuIdentity | None = None) -> None:
        super().__init__(manifest)
        self.config = config or TensorRTConfig()
        self._gpu = gpu
        self._runner: Any = None
        self.engine_path: Path | None = None
        self.built = False  # True when activate had to build (no valid cache entry)

    def limits(self) -> dict[str, tuple[int, int]]:
        return {n: (lo, hi) for n, (lo, _, hi) in self.config.profile.ranges(self.manifest).items()}

    def cache_key(self, tensorrt_version: str) -> EngineCacheKey:
        gpu = self._gpu or gpu_identity()
        return EngineCacheKey(onnx_sha256=self.manifest.sha256, tensorrt_version=tensorrt_version,
                              gpu_name=gpu.name, compute_capability=gpu.compute_capability,
                              fp16=self.config.fp16, profile=self.config.profile.key(),
                              precision="pixels" if self.geometry_layers() else "all")

    def geometry_layers(self) -> list[str]:
        """The ONNX nodes to keep in fp32 in an fp16 engine (engines/runtimes/precision.py)."""
        if not (self.config.fp16 and self.config.fp32_geometry):
            return []
        return list(self.manifest.raw.get("fp32_layers", []))

    def _activate(self) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise MissingRuntimeError("tensorrt", "tensorrt (NVIDIA's wheel, e.g. "
                                      "`pip install tensorrt` on a CUDA host)", str(exc)) from exc
        try:
            from polygraphy.backend.common import BytesFromPath
            from polygraphy.backend.trt import (
                CreateConfig,
                EngineFromBytes,
                EngineFromNetwork,
                NetworkFromOnnxPath,
                PostprocessNetwork,
                Profile,
                SaveEngine,
                TrtRunner,
            )
        except ImportError as exc:
            raise MissingRuntimeError("tensorrt", "polygraphy (pip install polygraphy)",
                                      str(exc)) from exc
        cache = self.config.cache_dir
        cache.mkdir(parents=True, exist_ok=True)
        key = self.cache_key(trt.__version__)
        engine_path, sidecar = engine_paths(cache, self.manifest.name, key)
        if cached_engine(cache, self.manifest.name, key) is not None:
            loader: Any = EngineFromBytes(BytesFromPath(str(engine_path)))
            log.info("%s: TensorRT engine from cache %s", self.manifest.name, engine_path)
        else:
            profile = Profile()
            for name, (lo, opt, hi) in profile_shapes(self.manifest, self.config.profile).items():
                profile.add(name, min=lo, opt=opt, max=hi)
            timing = str(cache / "timing.cache")
            parsed: Any = NetworkFromOnnxPath(str(self.manifest.onnx_path))
            fp32 = self.geometry_layers()
            if fp32:
                from vivify.engines.runtimes.precision import keep_fp32

                parsed = PostprocessNetwork(  # Polygraphy passes the parsed `network=` by name
                    parsed, lambda network: keep_fp32(network, fp32, trt), name="fp32-geometry")
            build = EngineFromNetwork(
                parsed,
                config=CreateConfig(fp16=self.config.fp16, profiles=[profile],
                                    precision_constraints="prefer" if fp32 else None,
                                    load_timing_cache=timing,
                                    memory_pool_limits={
                                        trt.MemoryPoolType.WORKSPACE: self.config.workspace_bytes}),
                save_timing_cache=timing)
            loader = SaveEngine(build, str(engine_path))
            log.info("%s: building TensorRT engine %s (key %s)", self.manifest.name,
                     engine_path, key)
            self.built = True
        self._runner = TrtRunner(loader)
        self._runner.activate()
        if self.built:
            sidecar.write_text(json.dumps(asdict(key), indent=2))
        self.engine_path = engine_path

    def _deactivate(self) -> None:
        if self._runner is not None:
            self._runner.deactivate()
            self._runner = None

    def _upload(self, feeds: Any) -> dict[str, Any]:
        """Pinned inputs go to the GPU once (Polygraphy accepts DeviceViews in feed dicts)."""
        from polygraphy import cuda

        out = {}
        for name, value in feeds.items():
            arr = np.ascontiguousarray(value)
            dev = cuda.DeviceArray(shape=arr.shape, dtype=arr.dtype)
            dev.copy_from(arr)
            out[name] = dev
        return out

    def _infer(self, feeds: dict[str, Any]) -> dict[str, Any]:
        outs = self._runner.infer(feeds, check_inputs=False)
        return {n: np.asarray(outs[n]) for n in self.manifest.output_names}
