"""The torch runner's batch buckets, re-pinning and uint8 output — on the CPU here, and on CUDA
(with CUDA graphs) wherever a GPU is visible: the CUDA tests skip, saying so, on this machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vivify.engines.motion.vector import motion, rest_motion  # noqa: E402
from vivify.engines.render.graph_renderer import to_uint8  # noqa: E402
from vivify.engines.runtimes import ModelManifest  # noqa: E402
from vivify.engines.runtimes.renderer_bank import BANK_INPUTS, build_bank  # noqa: E402
from vivify.engines.runtimes.torch_runner import (  # noqa: E402
    DEFAULT_BUCKETS,
    TorchConfig,
    TorchRunner,
    bucket_for,
)
from vivify.export.engine_export import export_renderer  # noqa: E402

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")
MOTIONS = np.stack([motion(jaw_open=0.8, head_yaw=0.5), rest_motion(),
                    motion(blink_l=1, blink_r=1, gaze_x=0.6)])


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> ModelManifest:
    out: Path = tmp_path_factory.mktemp("engines")
    export_renderer(out)
    return ModelManifest.load(out / "renderer.json")


@pytest.fixture(scope="module")
def bank(request: pytest.FixtureRequest) -> dict[str, np.ndarray]:
    """Two visibly different avatars. A GPU host has no face models (bench/gpu_check.sh carries
    the default avatar's bank file instead), so that file is used when it is there."""
    from bench.pipeline import BANK_CACHE, default_bank

    if BANK_CACHE.is_file():
        one = default_bank(BANK_CACHE)
    else:
        one = build_bank([request.getfixturevalue("pack")])
    two = {k: np.concatenate([v, v]) for k, v in one.items()}
    two["images"][1] = 255.0 - two["images"][1]
    return two


def _render(runner: TorchRunner, bank: dict[str, np.ndarray], rows: list[int]) -> np.ndarray:
    runner.pin({k: bank[k] for k in BANK_INPUTS})
    feeds = {"motion": MOTIONS[: len(rows)], "avatar": np.array(rows, np.int32)}
    return runner.infer_uint8(feeds, "image")


def test_bucket_for() -> None:
    assert [bucket_for(n, DEFAULT_BUCKETS) for n in (1, 2, 3, 5, 8, 33, 64)] == \
        [1, 2, 4, 8, 8, 64, 64]
    with pytest.raises(ValueError, match="largest"):
        bucket_for(65, DEFAULT_BUCKETS)
    with pytest.raises(ValueError, match="increasing"):
        TorchConfig(batch_buckets=(4, 2))


def test_padded_batches_give_the_unpadded_rows(manifest: ModelManifest, bank) -> None:
    """Batch 3 padded to bucket 4 (rows repeated) returns exactly the 3 rows of an eager call."""
    eager = TorchRunner(manifest, TorchConfig(device="cpu"))
    padded = TorchRunner(manifest, TorchConfig(device="cpu", bucket_on_cpu=True,
                                               batch_buckets=(1, 4)))
    with eager, padded:
        assert padded.limits() == {"batch": (1, 4)} and eager.limits() == {}
        ref = _render(eager, bank, [0, 1, 0])
        got = _render(padded, bank, [0, 1, 0])
        with pytest.raises(ValueError, match=r"outside 1\.\.4"):
            padded.infer({"motion": np.zeros((5, 19), np.float32),
                          "avatar": np.zeros(5, np.int32)})
    assert got.shape == (3, 512, 512, 3) and got.dtype == np.uint8
    assert np.array_equal(got, ref)


def test_uint8_matches_the_float_output(manifest: ModelManifest, bank) -> None:
    with TorchRunner(manifest, TorchConfig(device="cpu")) as runner:
        runner.pin({k: bank[k] for k in BANK_INPUTS})
        feeds = {"motion": MOTIONS[:2], "avatar": np.array([0, 1], np.int32)}
        floats = runner.infer(feeds)["image"]
        frames = runner.infer_uint8(feeds, "image")
    assert np.array_equal(frames, to_uint8(floats))


@needs_cuda
def test_cuda_graphs_match_eager_cpu(manifest: ModelManifest, bank) -> None:
    """Graph capture per bucket, replay with new inputs, a re-pinned bank: all equal the CPU
    twin within a grey level (different kernels, same maths)."""
    cpu = TorchRunner(manifest, TorchConfig(device="cpu"))
    gpu = TorchRunner(manifest, TorchConfig(device="cuda", cuda_graphs=True))
    with cpu, gpu:
        for rows in ([0], [0, 1, 0], [1, 0]):  # buckets 1, 4, 2; then 4 again below
            ref = _render(cpu, bank, rows).astype(int)
            got = _render(gpu, bank, rows).astype(int)
            assert np.quantile(np.abs(got - ref), 0.999) <= 1, rows
        assert len(gpu._graphs) == 1  # re-pinning dropped the earlier captures
        swapped = {k: v[::-1].copy() for k, v in bank.items()}  # same shapes, rows swapped
        ref = _render(cpu, swapped, [0, 1, 0]).astype(int)
        got = _render(gpu, swapped, [0, 1, 0]).astype(int)
        assert np.quantile(np.abs(got - ref), 0.999) <= 1  # the new bank, not the captured one


@needs_cuda
def test_generator_twin_on_cuda_matches_onnx_runtime() -> None:
    from vivify.engines.motion.generator import DEFAULT_MANIFEST, GeneratorRunner

    manifest = ModelManifest.load(DEFAULT_MANIFEST)
    feeds = manifest.example_feeds({"batch": 5}, seed=1)
    cpu = GeneratorRunner(runtime="ort-cpu")
    with TorchRunner(manifest, TorchConfig(device="cuda")) as gpu:
        got = gpu.infer(feeds)["motion"]
    ref = cpu.infer(feeds["mel"], feeds["past"], feeds["controls"], feeds["noise"])
    assert np.abs(got - ref).max() < 1e-3
