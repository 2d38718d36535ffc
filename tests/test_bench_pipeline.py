"""bench/pipeline.py: the full per-frame pipeline bench runs, reports consistent numbers, and
measures the real thing (its frames are the renderer graph's)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from bench import pipeline as bp  # noqa: E402  (after the skips: the bench needs torch/onnx)
from vivify.engines.motion.generator import GeneratorSpec, load_manifest  # noqa: E402
from vivify.engines.runtimes import ModelManifest  # noqa: E402

WINDOW = GeneratorSpec.from_config(load_manifest()["config"]).window  # the shipped model's W

TIMINGS = ("generator_ms", "renderer_ms_per_call", "uint8_ms", "to_host_ms", "step_ms",
           "frames_per_s", "sessions_25fps")


@pytest.fixture(scope="module")
def renderer_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The renderer graph exported once for this module (the bench's own fallback path)."""
    path = tmp_path_factory.mktemp("engines") / "renderer.json"
    bp.renderer_manifest(path)
    return path


@pytest.fixture(scope="module")
def bank_file(face_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bench's one-avatar bank file, built once here (never into the repo's artifacts/)."""
    path = tmp_path_factory.mktemp("bank") / "bank.npz"
    bp.default_bank(path)
    return path


@pytest.fixture(scope="module")
def bank(bank_file: Path) -> dict[str, np.ndarray]:
    return bp.avatar_bank(2, bank_file)


def _runners(runtime: str, renderer_json: Path):
    gen = bp.make_runner(ModelManifest.load(bp.DEFAULT_MANIFEST), runtime, False)
    ren = bp.make_runner(ModelManifest.load(renderer_json), runtime, False)
    return gen, ren


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["torch-cpu", "ort-cpu"])
def test_quick_run_writes_consistent_rows(tmp_path: Path, renderer_json: Path, bank_file: Path,
                                          runtime: str) -> None:
    out = tmp_path / "pipeline.json"
    rc = bp.main(["--quick", "--runtime", runtime, "--renderer-manifest", str(renderer_json),
                  "--bank", str(bank_file), "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["failed"] == []
    assert result["environment"]["machine"]["git"] and result["environment"]["torch"]
    rows = result["rows"]
    assert [r["batch"] for r in rows] == [1, 2]
    window = result["config"]["window"]
    for r in rows:
        assert (r["generator_runtime"], r["renderer_runtime"]) == (runtime, runtime)
        for key in TIMINGS:
            assert math.isfinite(r[key]) and r[key] >= 0, key
        assert min(r["generator_ms"], r["renderer_ms_per_call"], r["step_ms"]) > 0
        assert len(r["step_ms_all"]) == 2
        expected = r["batch"] * window * 1e3 / r["step_ms"]
        assert r["frames_per_s"] == pytest.approx(expected, rel=1e-3)
        assert r["sessions_25fps"] == pytest.approx(r["frames_per_s"] / 25, abs=0.01)
        # the stages add up to the step (medians of each, so only roughly)
        parts = r["generator_ms"] + window * r["renderer_ms_per_call"] + r["uint8_ms"]
        assert parts == pytest.approx(r["step_ms"], rel=0.25)
        assert r["check_max_diff"] <= 1  # frames = the renderer's own output for the motions


@pytest.mark.slow
def test_pipeline_frames_are_the_graphs_output(renderer_json: Path, bank) -> None:
    """Independently of the runner plumbing: the pipeline's uint8 frames equal the renderer
    graph module's output for the generator's motions, rows mixing the bank's avatars."""
    from vivify.engines.render.graph_renderer import to_uint8
    from vivify.engines.runtimes.torch_models.renderer_graph import RendererGraph
    from vivify.export.engine_export import INPUT_NAMES

    gen, ren = _runners("torch-cpu", renderer_json)
    with gen, ren:
        ren.pin(bank)
        pipe = bp.Pipeline(gen, ren, bank, batch=3, window=WINDOW, seed=5)
        frames, motion, times = pipe.step(pipe.inputs())
        frames, motion = frames.copy(), motion.numpy().copy()
    assert frames.shape == (3, WINDOW, 512, 512, 3) and frames.dtype == np.uint8
    assert list(pipe.avatar) == [0, 1, 0] and len(times.renderer_ms) == WINDOW
    graph = RendererGraph().eval()
    for k in range(WINDOW):
        feeds = {"motion": motion[:, k], "avatar": pipe.avatar, **bank}
        with torch.no_grad():
            ref = graph(*[torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in INPUT_NAMES])
        diff = np.abs(frames[:, k].astype(int) - to_uint8(ref.numpy()).astype(int))
        assert diff.max() <= 1
    assert np.abs(frames[0].astype(int) - frames[1].astype(int)).max() > 0  # rows differ


def test_pipeline_is_device_clean(renderer_json: Path, bank) -> None:
    """Generator → renderer → uint8 stays on the runners' device with no host tensor mixed in:
    on the meta device (a stand-in for CUDA here) a stray CPU tensor is an error."""
    from vivify.engines.runtimes.torch_runner import TorchConfig, TorchRunner

    gen = TorchRunner(ModelManifest.load(bp.DEFAULT_MANIFEST),
                      TorchConfig(device="meta", cuda_graphs=False))
    ren = TorchRunner(ModelManifest.load(renderer_json),
                      TorchConfig(device="meta", cuda_graphs=False))
    with gen, ren:
        ren.pin(bank)
        pipe = bp.Pipeline(gen, ren, bank, batch=2, window=WINDOW)
        motion = pipe._motion(pipe.inputs())
        assert motion.device.type == "meta"
        for k in range(WINDOW):
            image = pipe._render(motion, k)  # check_feeds accepted the device tensors
            pipe._to_uint8(image, k)
            assert image.device.type == "meta"
    assert pipe.frames.device.type == "meta" and pipe.frames.dtype == torch.uint8


def test_a_failing_batch_is_recorded_and_the_rest_run(tmp_path: Path, renderer_json: Path,
                                                      bank_file: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real = bp.measure

    def measure(pipe, steps, warmup):
        if pipe.batch == 2:
            raise MemoryError("out of memory (simulated)")
        return real(pipe, steps, warmup)

    monkeypatch.setattr(bp, "measure", measure)
    out = tmp_path / "p.json"
    rc = bp.main(["--runtime", "ort-cpu", "--batches", "2,1", "--steps", "1",
                  "--renderer-manifest", str(renderer_json), "--bank", str(bank_file),
                  "--out", str(out)])
    assert rc == 1
    rows = json.loads(out.read_text())["rows"]
    assert "out of memory" in rows[0]["error"] and rows[1]["frames_per_s"] > 0


def test_bank_file_is_reused_and_versioned(tmp_path: Path, bank_file: Path) -> None:
    """The saved bank (what a GPU host without face models or network is given) loads back
    equal; a file stamped with another bank version is rebuilt, not trusted."""
    from vivify.engines.runtimes.renderer_bank import BANK_INPUTS

    built = bp.default_bank(bank_file)
    with np.load(bank_file) as saved:
        assert all(np.array_equal(saved[k], built[k]) for k in BANK_INPUTS)
        stale = {k: saved[k] for k in BANK_INPUTS}
    old = tmp_path / "old.npz"
    np.savez(old, version=np.array("bank-0/rig-0"), **stale)
    bp.default_bank(old)
    with np.load(old) as saved:
        assert str(saved["version"]) != "bank-0/rig-0"
    four = bp.avatar_bank(4, bank_file)
    assert four["images"].shape[0] == 4 and len({four["palette"][a].tobytes()
                                                 for a in range(4)}) == 4


def test_config_and_flags() -> None:
    assert bp.parse(["--quick"]).batches == (1, 2) and bp.parse(["--quick"]).steps == 2
    assert bp.parse(["--batches", "1,8,32,64"]).batches == (1, 8, 32, 64)
    with pytest.raises(ValueError, match="runtime"):
        bp.PipelineConfig(runtime="vulkan")
    with pytest.raises(ValueError, match="cuda_graphs"):
        bp.PipelineConfig(cuda_graphs="maybe")
