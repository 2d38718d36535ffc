"""The renderer graph
(engines/runtimes/torch_models/renderer_graph.py) against the CPU renderer, and its ONNX export:
PSNR ≥ 40 dB per test motion, TensorRT-native operators only, dynamic batch, mixed avatars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from vivify.engines.motion.vector import motion, rest_motion  # noqa: E402
from vivify.engines.render.graph_renderer import to_uint8  # noqa: E402
from vivify.engines.runtimes import ModelManifest, create_runner  # noqa: E402
from vivify.engines.runtimes.renderer_bank import (  # noqa: E402
    BANK_INPUTS,
    GraphGeometry,
    build_bank,
    renderer_feeds,
)
from vivify.engines.runtimes.torch_models.renderer_graph import RendererGraph  # noqa: E402
from vivify.export.engine_export import INPUT_NAMES, export_renderer, inspect  # noqa: E402
from vivify.export.parity import psnr  # noqa: E402

MOTIONS = {
    "rest": rest_motion(),
    "jaw_open": motion(jaw_open=1),
    "speech": motion(jaw_open=0.5, lip_stretch=0.6, upper_lip_raise=0.5, lower_lip_depress=0.5),
    "blink": motion(blink_l=1, blink_r=1),
    "half_blink": motion(blink_l=0.75, blink_r=0.6, brow_raise=1),
    "head_turn": motion(head_yaw=1),
    "turn_talk": motion(jaw_open=0.7, head_yaw=-0.8, head_roll=0.6, head_pitch=0.4),
    "gaze": motion(gaze_x=0.8, gaze_y=-0.5),
    "lip_press": motion(jaw_open=0.6, lip_press=1),
    "smile": motion(smile=1, jaw_open=0.4),
    "far_left": motion(head_scale=-1, head_tx=-1, head_ty=1),
}


@pytest.fixture(scope="module")
def bank(pack):
    return build_bank([pack])


@pytest.fixture(scope="module")
def graph_frames(bank) -> np.ndarray:
    torch.set_num_threads(1)
    feeds = renderer_feeds(bank, np.stack(list(MOTIONS.values())))
    with torch.no_grad():
        out = RendererGraph().eval()(*[torch.from_numpy(feeds[k]) for k in INPUT_NAMES])
    return to_uint8(out.numpy())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> ModelManifest:
    out = tmp_path_factory.mktemp("engines")
    export_renderer(out)
    return ModelManifest.load(out / "renderer.json")


@pytest.mark.parametrize("name", list(MOTIONS))
def test_graph_matches_cpu_renderer(renderer, graph_frames: np.ndarray, name: str) -> None:
    reference = renderer.render(MOTIONS[name]).image
    got = graph_frames[list(MOTIONS).index(name)]
    value = psnr(reference, got)
    assert value >= 40.0, f"{name}: {value:.1f} dB"
    if name == "rest":
        assert np.array_equal(reference, got)


def test_onnx_is_tensorrt_friendly(exported: ModelManifest) -> None:
    report = inspect(exported.onnx_path)
    assert report["checker"] == "passed"
    assert report["opset"] >= 16  # GridSample
    assert "GridSample" in report["operators"]
    assert report["not_tensorrt_native"] == []
    assert report["loops_or_custom"] == []
    model = onnx.load(str(exported.onnx_path))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input}
    assert dims["motion"] == ["batch", 19]
    assert dims["phi"][0] == "avatars"
    out = model.graph.output[0].type.tensor_type.shape.dim
    assert out[0].dim_param == "batch" and [d.dim_value for d in out[1:]] == [512, 512, 3]


def test_polygraphy_inspection(exported: ModelManifest) -> None:
    pytest.importorskip("polygraphy")
    report = inspect(exported.onnx_path)
    assert report["polygraphy"] == "inspected"
    assert any("motion" in line for line in report["polygraphy_summary"])


def test_onnx_runtime_matches_torch_with_mixed_avatars(pack, bank, exported: ModelManifest
                                                       ) -> None:
    """Dynamic batch 1 and 3, rows picking different avatars of a two-avatar bank."""
    two = {k: np.concatenate([v, v]) for k, v in bank.items()}
    two["images"][1] = 255.0 - two["images"][1]  # a visibly different second avatar
    two["palette"][1] = 255.0 - two["palette"][1]
    motions = np.stack([MOTIONS["speech"], MOTIONS["speech"], MOTIONS["turn_talk"]])
    feeds = renderer_feeds(two, motions, np.array([0, 1, 0], np.int32))
    with torch.no_grad():
        ref = RendererGraph().eval()(*[torch.from_numpy(feeds[k]) for k in INPUT_NAMES]).numpy()
    with create_runner(exported, "ort-cpu") as runner:
        runner.pin({k: two[k] for k in BANK_INPUTS})
        got = runner.infer({"motion": motions, "avatar": feeds["avatar"]})["image"]
        one = runner.infer({"motion": motions[:1], "avatar": feeds["avatar"][:1]})["image"]
    assert got.shape == (3, 512, 512, 3) and one.shape == (1, 512, 512, 3)
    assert np.quantile(np.abs(got - ref), 0.999) <= 1.0
    assert np.abs(one[0] - got[0]).max() <= 1.0
    assert psnr(to_uint8(got[0]), to_uint8(got[1])) < 15  # row 1 used the other avatar


def test_bank_checks_geometry(pack) -> None:
    with pytest.raises(ValueError, match="graph is 256"):
        build_bank([pack], GraphGeometry(size=256))
    with pytest.raises(ValueError, match="at least one"):
        build_bank([])


def test_graph_for_torch_runner_on_cpu(bank, exported: ModelManifest) -> None:
    """The torch runner builds the twin from the manifest's torch_factory (CPU here)."""
    from vivify.engines.runtimes.torch_runner import TorchConfig, TorchRunner

    with TorchRunner(exported, TorchConfig(device="cpu")) as runner:
        runner.pin(bank)
        out = runner.infer({"motion": rest_motion()[None], "avatar": np.zeros(1, np.int32)})
    assert np.array_equal(to_uint8(out["image"][0]),
                          bank["images"][0, :3].transpose(1, 2, 0).astype(np.uint8))


def test_export_cli(tmp_path: Path) -> None:
    from vivify.streamer.cli.main import main

    assert main(["export", "--out", str(tmp_path), "--with-generator"]) == 0
    for stage in ("renderer", "motion_generator"):
        manifest = ModelManifest.load(tmp_path / f"{stage}.json")  # verifies the sha256
        assert manifest.onnx_path.is_file()


def test_graph_is_device_clean(bank) -> None:
    """Every constant lives in a buffer: the whole forward runs on another device (meta here,
    CUDA on a GPU host) without one host tensor, which a CUDA-graph capture would refuse."""
    graph = RendererGraph().eval().to("meta")
    feeds = renderer_feeds(bank, np.stack([MOTIONS["turn_talk"], MOTIONS["blink"]]))
    with torch.no_grad():
        out = graph(*[torch.from_numpy(feeds[k]).to("meta") for k in INPUT_NAMES])
    assert out.device.type == "meta" and tuple(out.shape) == (2, 512, 512, 3)


def test_export_knows_when_it_is_stale(tmp_path: Path) -> None:
    import json

    from vivify.export.engine_export import is_current

    manifest = export_renderer(tmp_path)
    path = tmp_path / "renderer.json"
    assert is_current(path) and len(manifest["twin_source_sha256"]) == 64
    path.write_text(json.dumps({**manifest, "twin_source_sha256": "0" * 64}))
    assert not is_current(path) and not is_current(tmp_path / "missing.json")
