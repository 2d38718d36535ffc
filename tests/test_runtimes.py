"""engines/runtimes without a GPU: manifest input checking, profile shapes, engine cache keys,
runtime selection with faked availability, clear errors for missing libraries, and the ONNX
Runtime CPU runner end to end (also under the motion generator)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vivify.engines.motion.generator import DEFAULT_MANIFEST, GeneratorRunner, GeneratorSpec
from vivify.engines.runtimes import (
    Availability,
    InputMismatchError,
    ManifestMismatchError,
    MissingRuntimeError,
    ModelManifest,
    OrtConfig,
    OrtRunner,
    ProfileConfig,
    create_runner,
    probe,
    profile_shapes,
    select_runtime,
)
from vivify.engines.runtimes.ort_runner import provider_options
from vivify.engines.runtimes.renderer_bank import GraphGeometry
from vivify.engines.runtimes.tensorrt_runner import (
    EngineCacheKey,
    GpuIdentity,
    TensorRTConfig,
    TensorRTRunner,
    cached_engine,
    engine_paths,
)

GPU_ALL = Availability(gpu_visible=True, tensorrt=True, polygraphy=True, torch_cuda=True,
                       ort_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                      "CPUExecutionProvider"))
CPU_ONLY = Availability(ort_providers=("CPUExecutionProvider",))


@pytest.fixture(scope="module")
def generator() -> ModelManifest:
    return ModelManifest.load(DEFAULT_MANIFEST)


@pytest.fixture
def renderer_manifest(tmp_path: Path) -> ModelManifest:
    """A renderer-shaped manifest (no ONNX needed for shape logic)."""
    geo = GraphGeometry()
    raw = {"name": "renderer", "file": "renderer.onnx", "sha256": "ab" * 32,
           "rig_version": "rig-1", "inputs": geo.input_shapes(), "outputs": geo.output_shapes(),
           "dtypes": {"avatar": "int32"},
           "torch_factory": "vivify.engines.runtimes.torch_models.renderer_graph:RendererGraph"}
    path = tmp_path / "renderer.json"
    path.write_text(json.dumps(raw))
    return ModelManifest.load(path, verify=False)


def _feeds(manifest: ModelManifest, batch: int) -> dict[str, np.ndarray]:
    return manifest.example_feeds({"batch": batch})


# -- manifests and input checking --------------------------------------------------------------

def test_manifest_verifies_sha256(tmp_path: Path) -> None:
    raw = json.loads(DEFAULT_MANIFEST.read_text())
    (tmp_path / raw["file"]).write_bytes(b"not the model")
    (tmp_path / "m.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestMismatchError, match="sha256"):
        ModelManifest.load(tmp_path / "m.json")


def test_input_checking_names_the_input(generator: ModelManifest) -> None:
    good = _feeds(generator, 3)
    assert generator.check_feeds(good) == {"batch": 3}
    with pytest.raises(InputMismatchError, match="missing inputs \\['noise'\\]"):
        generator.check_feeds({k: v for k, v in good.items() if k != "noise"})
    with pytest.raises(InputMismatchError, match="unexpected \\['extra'\\]"):
        generator.check_feeds({**good, "extra": good["mel"]})
    with pytest.raises(InputMismatchError, match="'past' has dtype float64"):
        generator.check_feeds({**good, "past": good["past"].astype(np.float64)})
    with pytest.raises(InputMismatchError, match="'mel' has shape"):
        generator.check_feeds({**good, "mel": good["mel"][:, :10]})
    with pytest.raises(InputMismatchError, match="axis 'batch' is 3 elsewhere but 2"):
        generator.check_feeds({**good, "noise": good["noise"][:2]})
    with pytest.raises(InputMismatchError, match=r"batch = 3 is outside 1\.\.2"):
        generator.check_feeds(good, {"batch": (1, 2)})


def test_renderer_manifest_axes(renderer_manifest: ModelManifest) -> None:
    assert renderer_manifest.dynamic_dims() == ("batch", "avatars")
    feeds = renderer_manifest.example_feeds({"batch": 2, "avatars": 1})
    assert feeds["avatar"].dtype == np.int32
    assert renderer_manifest.check_feeds(feeds) == {"batch": 2, "avatars": 1}


# -- profiles and engine cache keys ------------------------------------------------------------

def test_profile_shapes(renderer_manifest: ModelManifest, generator: ModelManifest) -> None:
    prof = ProfileConfig(axes={"batch": (1, 8, 64), "avatars": (1, 2, 4)})
    shapes = profile_shapes(renderer_manifest, prof)
    assert shapes["motion"] == ((1, 19), (8, 19), (64, 19))
    assert shapes["avatar"] == ((1,), (8,), (64,))
    assert shapes["phi"][2] == (4, 66 * 66, 194)
    mel = 4 * GeneratorSpec.from_config(generator.raw["config"]).context_frames
    assert profile_shapes(generator, prof)["mel"] == ((1, mel, 40), (8, mel, 40), (64, mel, 40))
    with pytest.raises(ValueError, match="min ≤ opt ≤ max"):
        ProfileConfig(axes={"batch": (4, 2, 8)})


def test_engine_cache_key_changes_with_every_field(tmp_path: Path) -> None:
    key = EngineCacheKey(onnx_sha256="a" * 64, tensorrt_version="10.3.0", gpu_name="NVIDIA H100",
                         compute_capability="9.0", fp16=True, profile="batch=(1, 8, 64)")
    variants = [replace(key, onnx_sha256="b" * 64), replace(key, tensorrt_version="10.4.0"),
                replace(key, gpu_name="NVIDIA L4"), replace(key, compute_capability="8.9"),
                replace(key, fp16=False), replace(key, profile="batch=(1, 8, 32)")]
    digests = {key.digest(), *(v.digest() for v in variants)}
    assert len(digests) == 1 + len(variants)
    assert key.digest() == replace(key).digest()  # stable
    assert cached_engine(tmp_path, "renderer", key) is None
    engine, sidecar = engine_paths(tmp_path, "renderer", key)
    engine.write_bytes(b"engine")
    sidecar.write_text(json.dumps({**json.loads(json.dumps(key.__dict__)), "fp16": False}))
    assert cached_engine(tmp_path, "renderer", key) is None  # sidecar disagrees: rebuild
    sidecar.write_text(json.dumps(key.__dict__))
    assert cached_engine(tmp_path, "renderer", key) == engine
    assert cached_engine(tmp_path, "renderer", variants[1]) is None  # TensorRT upgraded


def test_tensorrt_runner_key_and_missing_library(generator: ModelManifest,
                                                 tmp_path: Path) -> None:
    gpu = GpuIdentity("NVIDIA H100 80GB HBM3", "9.0")
    runner = TensorRTRunner(generator, TensorRTConfig(cache_dir=tmp_path), gpu=gpu)
    key = runner.cache_key("10.3.0")
    assert key.onnx_sha256 == generator.sha256 and key.gpu_name == gpu.name
    assert runner.limits() == {"batch": (1, 64)}
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(MissingRuntimeError, match="needs tensorrt") as info:
            runner.activate()
        assert info.value.package.startswith("tensorrt")
        assert not runner.is_active


def test_ort_tensorrt_provider_options(generator: ModelManifest) -> None:
    cfg = OrtConfig(provider="tensorrt", profile=ProfileConfig(axes={"batch": (1, 4, 16)}))
    (name, opts), *rest = provider_options(generator, cfg)
    assert name == "TensorrtExecutionProvider"
    assert [n for n, _ in rest] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    mel = 4 * GeneratorSpec.from_config(generator.raw["config"]).context_frames
    assert opts["trt_profile_max_shapes"].startswith(f"mel:16x{mel}x40,past:16x8x19")
    assert opts["trt_fp16_enable"] and opts["trt_engine_cache_enable"]


# -- selection -----------------------------------------------------------------------------------

def test_auto_prefers_tensorrt_then_falls_back(generator: ModelManifest,
                                               renderer_manifest: ModelManifest) -> None:
    assert select_runtime("auto", generator, GPU_ALL).runtime == "tensorrt"
    no_trt = replace(GPU_ALL, tensorrt=False,
                     ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert select_runtime("auto", renderer_manifest, no_trt).runtime == "torch-cuda"
    assert select_runtime("auto", generator, no_trt).runtime == "torch-cuda"  # its twin
    # A manifest that names no torch twin: torch is skipped, with the reason.
    twinless = replace(generator, raw={k: v for k, v in generator.raw.items()
                                       if k != "torch_factory"})
    choice = select_runtime("auto", twinless, no_trt)
    assert choice.runtime == "ort-cuda"
    assert ("torch-cuda", "the manifest names no torch twin") in choice.skipped
    cpu = select_runtime("auto", generator, CPU_ONLY)
    assert cpu.runtime == "ort-cpu"
    assert dict(cpu.skipped)["tensorrt"] == "no NVIDIA GPU visible"


def test_named_runtime_missing_names_the_package(generator: ModelManifest) -> None:
    with pytest.raises(MissingRuntimeError, match="onnxruntime-gpu") as info:
        select_runtime("ort-cuda", generator, CPU_ONLY)
    assert info.value.runtime == "ort-cuda"
    with pytest.raises(MissingRuntimeError, match="tensorrt"):
        create_runner(generator, "tensorrt", CPU_ONLY)
    with pytest.raises(ValueError, match="unknown runtime"):
        select_runtime("vulkan", generator, CPU_ONLY)
    with pytest.raises(MissingRuntimeError, match="no runtime can run here"):
        select_runtime("auto", generator, Availability())


def test_probe_here_and_real_missing_providers(generator: ModelManifest) -> None:
    have = probe()
    assert "CPUExecutionProvider" in have.ort_providers
    if "CUDAExecutionProvider" not in have.ort_providers:
        with pytest.raises(MissingRuntimeError, match="onnxruntime-gpu"):
            OrtRunner(generator, OrtConfig(provider="cuda")).activate()


def test_torch_cuda_missing_is_clear(renderer_manifest: ModelManifest) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from vivify.engines.runtimes.torch_runner import TorchRunner

    with pytest.raises(MissingRuntimeError, match="torch with CUDA"):
        TorchRunner(renderer_manifest).activate()


# -- ONNX Runtime CPU end to end -----------------------------------------------------------------

def test_ort_cpu_runner_lifecycle(generator: ModelManifest) -> None:
    runner = create_runner(generator, "ort-cpu", CPU_ONLY)
    feeds = _feeds(generator, 2)
    with pytest.raises(RuntimeError, match="not active"):
        runner.infer(feeds)
    runner.activate()
    runner.activate()  # twice is fine
    out = runner.infer(feeds)["motion"]
    window = GeneratorSpec.from_config(generator.raw["config"]).window
    assert out.shape == (2, window, 19) and out.dtype == np.float32
    runner.pin({"controls": feeds["controls"]})
    again = runner.infer({k: v for k, v in feeds.items() if k != "controls"})["motion"]
    np.testing.assert_array_equal(out, again)
    with pytest.raises(InputMismatchError, match="dtype float64"):
        runner.infer({**feeds, "mel": feeds["mel"].astype(np.float64)})
    runner.deactivate()
    runner.deactivate()
    assert not runner.is_active


def test_generator_runner_on_runtimes(generator: ModelManifest) -> None:
    feeds = _feeds(generator, 4)
    default = GeneratorRunner()
    assert default.runner.runtime == "ort-cpu" and default.session is not None
    expected = default.infer(feeds["mel"], feeds["past"], feeds["controls"], feeds["noise"])
    auto = GeneratorRunner(runtime="auto")  # on a GPU-less machine this is ort-cpu
    injected = GeneratorRunner(runner=OrtRunner(generator, OrtConfig(threads=1)))
    for r in (auto, injected):
        got = r.infer(feeds["mel"], feeds["past"], feeds["controls"], feeds["noise"])
        np.testing.assert_allclose(got, expected, atol=1e-6)
