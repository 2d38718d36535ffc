"""The torch twin of the committed generator
(engines/runtimes/torch_models/generator_twin.py) against ONNX
Runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vivify.engines.motion.generator import (
    DEFAULT_MANIFEST,
    INPUT_NAMES,
    GeneratorSpec,
    load_manifest,
)
from vivify.engines.runtimes import ModelManifest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

TOL = 1e-4  # rig units; measured here: 2.7e-7 (batch 5), the exporter's own bar is 1e-4
SPEC = GeneratorSpec.from_config(load_manifest()["config"])  # the shipped model's shapes
MEL, W = 4 * SPEC.context_frames, SPEC.window


def _feeds(batch: int, seed: int) -> dict[str, np.ndarray]:
    """Real-looking inputs: log-mel in the front end's −1.5..0.5 range, a small past."""
    rng = np.random.default_rng(seed)
    return {"mel": (rng.random((batch, MEL, 40)) * 2 - 1.5).astype(np.float32),
            "past": (rng.standard_normal((batch, 8, 19)) * 0.1).astype(np.float32),
            "controls": rng.standard_normal((batch, 7)).astype(np.float32),
            "noise": rng.standard_normal((batch, W, 19)).astype(np.float32)}


@pytest.fixture(scope="module")
def manifest() -> ModelManifest:
    return ModelManifest.load(DEFAULT_MANIFEST)


@pytest.fixture(scope="module")
def twin(manifest: ModelManifest):
    from vivify.engines.runtimes.torch_models.generator_twin import GeneratorTwin

    return GeneratorTwin.from_manifest(manifest)


@pytest.fixture(scope="module")
def ort_session(manifest: ModelManifest):
    import onnxruntime as ort

    return ort.InferenceSession(str(manifest.onnx_path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("batch", [1, 5])
def test_twin_matches_onnx_runtime(twin, ort_session, batch: int) -> None:
    feeds = _feeds(batch, seed=batch)
    ref = ort_session.run(["motion"], feeds)[0]
    with torch.no_grad():
        got = twin(*[torch.from_numpy(feeds[n]) for n in INPUT_NAMES]).numpy()
    assert got.shape == ref.shape == (batch, W, 19)
    assert float(np.abs(got - ref).max()) <= TOL


def test_manifest_names_the_twin(manifest: ModelManifest) -> None:
    assert (manifest.raw["torch_factory"]
            == "vivify.engines.runtimes.torch_models.generator_twin:GeneratorTwin")


def test_torch_runner_builds_the_twin(manifest: ModelManifest, ort_session) -> None:
    """The runtime path: TorchRunner → manifest torch_factory → from_manifest; feeds may
    be numpy or torch tensors (check_feeds reads dtype and shape from either)."""
    from vivify.engines.runtimes.torch_runner import TorchConfig, TorchRunner

    feeds = _feeds(3, seed=7)
    ref = ort_session.run(["motion"], feeds)[0]
    with TorchRunner(manifest, TorchConfig(device="cpu")) as runner:
        host = runner.infer(feeds)["motion"]
        dev = runner.infer_device({k: torch.from_numpy(v) for k, v in feeds.items()})["motion"]
    assert isinstance(dev, torch.Tensor)
    assert float(np.abs(host - ref).max()) <= TOL
    assert float(np.abs(dev.numpy() - ref).max()) <= TOL


def test_forward_is_device_clean(twin) -> None:
    """No tensor is made on the host inside forward (CUDA and CUDA-graph capture need that):
    on the meta device a stray CPU tensor is an error, as it would be on CUDA."""
    import copy

    meta = copy.deepcopy(twin).to("meta")
    with torch.no_grad():
        out = meta(*(torch.empty(s, device="meta") for s in
                     ((2, MEL, 40), (2, 8, 19), (2, 7), (2, W, 19))))
    assert out.shape == (2, W, 19) and out.device.type == "meta"


def test_every_weight_is_mapped_or_refused(tmp_path, manifest: ModelManifest) -> None:
    from vivify.engines.runtimes.torch_models.generator_twin import (
        NOT_IN_GRAPH,
        GeneratorTwin,
        TwinMismatchError,
    )

    model = onnx.load(str(manifest.onnx_path))
    names = {i.name for i in model.graph.initializer}
    assert any(n.startswith("onnx::MatMul") for n in names)  # the folded, transposed weights
    twin = GeneratorTwin.from_manifest(manifest)
    # Every exception names a real parameter (the aux head's only exists with closure_head).
    import dataclasses

    from vivify.engines.motion.generator_config import GeneratorConfig
    from vivify.engines.runtimes.torch_models.generator import MotionFlow, Student

    cfg = GeneratorConfig.from_dict(json.loads(DEFAULT_MANIFEST.read_text())["config"])
    with_head = Student(MotionFlow(dataclasses.replace(cfg, closure_head=0.1)))
    assert "flow.null_audio" in set(twin.state_dict())
    assert set(NOT_IN_GRAPH) <= set(with_head.state_dict())
    # A graph missing one weight is refused with the parameter's name.
    victim = next(i for i in model.graph.initializer if i.name.startswith("onnx::MatMul"))
    model.graph.initializer.remove(victim)
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(TwinMismatchError, match=r"no ONNX initializer matches \['flow\."):
        GeneratorTwin.from_onnx(broken)
    # A config that is not the file's is refused rather than loaded with the wrong weights.
    other = {**json.loads(DEFAULT_MANIFEST.read_text())["config"], "d_model": 32}
    with pytest.raises(TwinMismatchError, match="another config"):
        GeneratorTwin.from_onnx(manifest.onnx_path, other)
