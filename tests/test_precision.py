"""Mixed precision for fp16 TensorRT engines: which nodes stay fp32, how layers are matched and
marked, and that the choice is part of the engine cache key. No TensorRT needed (fakes stand in
for its network objects; the real build is untested here, see docs/engines.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from vivify.engines.runtimes import ModelManifest  # noqa: E402
from vivify.engines.runtimes.precision import geometry_nodes, keep_fp32, layer_matches  # noqa: E402
from vivify.engines.runtimes.tensorrt_runner import (  # noqa: E402
    GpuIdentity,
    TensorRTConfig,
    TensorRTRunner,
)


def _tiny_model() -> Any:
    """motion → (geometry) grid; images × grid → sample → blend with palette."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Mul", ["motion", "motion"], ["m2"], name="/geo/Mul"),
        helper.make_node("Add", ["m2", "motion"], ["grid"], name="/geo/Add"),
        helper.make_node("GridSample", ["images", "grid"], ["sampled"], name="/pix/GridSample"),
        helper.make_node("Mul", ["sampled", "palette"], ["out"], name="/pix/Mul"),
        helper.make_node("Shape", ["motion"], ["shape"], name="/geo/Shape"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(n, f, None) for n in ("motion", "images", "palette")],
        [helper.make_tensor_value_info("out", f, None)])
    return helper.make_model(graph)


def test_geometry_nodes_are_those_without_pixel_inputs() -> None:
    assert geometry_nodes(_tiny_model()) == ["/geo/Mul", "/geo/Add", "/geo/Shape"]


def test_exported_renderer_lists_its_geometry(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from vivify.export.engine_export import export_renderer

    manifest = export_renderer(tmp_path)
    model = onnx.load(str(tmp_path / "renderer.onnx"))
    fp32 = set(manifest["fp32_layers"])
    by_name = {n.name: n for n in model.graph.node}
    assert fp32 <= set(by_name)
    assert any(by_name[n].op_type == "MatMul" for n in fp32)  # the thin-plate field
    # The samplings of the crop's pixels may run in fp16; their sampling grids may not.
    pixel_samples = [n for n in model.graph.node if n.op_type == "GridSample"
                     and n.name not in fp32]
    assert pixel_samples
    producers = {o: n.name for n in model.graph.node for o in n.output}
    for gs in pixel_samples:
        assert producers[gs.input[1]] in fp32, gs.name


@dataclass
class FakeTensor:
    dtype: str


@dataclass
class FakeLayer:
    name: str
    outputs: list[FakeTensor]
    precision: str | None = None
    output_types: dict[int, str] = field(default_factory=dict)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_output(self, i: int) -> FakeTensor:
        return self.outputs[i]

    def set_output_type(self, i: int, dtype: str) -> None:
        self.output_types[i] = dtype


@dataclass
class FakeNetwork:
    layers: list[FakeLayer]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_layer(self, i: int) -> FakeLayer:
        return self.layers[i]


def test_keep_fp32_marks_matching_float_layers() -> None:
    trt = SimpleNamespace(float32="f32", float16="f16", int32="i32")
    net = FakeNetwork([
        FakeLayer("/geo/Mul", [FakeTensor("f32")]),
        FakeLayer("/geo/Add_1", [FakeTensor("f16")]),  # a second layer made from /geo/Add
        FakeLayer("/geo/Shape", [FakeTensor("i32")]),  # integer work: nothing to keep
        FakeLayer("/pix/GridSample", [FakeTensor("f32")]),
    ])
    assert keep_fp32(net, ["/geo/Mul", "/geo/Add", "/geo/Shape"], trt) == 2
    assert [layer.precision for layer in net.layers] == ["f32", "f32", None, None]
    assert net.layers[1].output_types == {0: "f32"}


def test_layer_names_match_their_node_only() -> None:
    nodes = {"/Add", "/Mul_3"}
    assert layer_matches("/Add", nodes) and layer_matches("/Mul_3_1", nodes)
    assert not layer_matches("/Add_7", {"/Add_70"}) and not layer_matches("/Mul_30", nodes)


def test_precision_policy_is_part_of_the_engine_key(tmp_path: Path) -> None:
    raw = {"name": "renderer", "file": "r.onnx", "sha256": "ab" * 32, "rig_version": "rig-1",
           "inputs": {"motion": ["batch", 19]}, "outputs": {"image": ["batch", 4]},
           "fp32_layers": ["/geo/Mul"]}
    (tmp_path / "r.json").write_text(json.dumps(raw))
    manifest = ModelManifest.load(tmp_path / "r.json", verify=False)
    gpu = GpuIdentity("NVIDIA H200", "9.0")
    mixed = TensorRTRunner(manifest, TensorRTConfig(), gpu=gpu)
    plain = TensorRTRunner(manifest, TensorRTConfig(fp32_geometry=False), gpu=gpu)
    fp32 = TensorRTRunner(manifest, TensorRTConfig(fp16=False), gpu=gpu)
    assert mixed.geometry_layers() == ["/geo/Mul"]
    assert plain.geometry_layers() == [] and fp32.geometry_layers() == []
    keys = [r.cache_key("10.8.0") for r in (mixed, plain, fp32)]
    assert [k.precision for k in keys] == ["pixels", "all", "all"]
    assert len({k.digest() for k in keys}) == 3
