"""Serving on the renderer graph: the bank of attached avatars, batched calls that mix avatars,
stamped uint8 frames, and a session's media played through it matching the CPU renderer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")  # exporting the graph needs the export extra

from tests.test_media import _run
from vivify.engines.motion.vector import clip_motion, motion, rest_motion
from vivify.engines.provenance.stamp import ProvenanceStamp
from vivify.engines.provenance.watermark import detect_frames
from vivify.engines.render.graph_renderer import (
    GraphRenderer,
    GraphUnavailableError,
    RenderRequest,
    to_uint8,
)
from vivify.engines.runtimes.renderer_bank import GraphGeometry
from vivify.export.engine_export import export_renderer
from vivify.export.parity import psnr
from vivify.streamer.media.batcher import WindowBatcher
from vivify.streamer.media.pairs import AVPair

SPEECH = motion(jaw_open=0.6, lip_stretch=0.5, head_yaw=0.4, blink_l=0.8, blink_r=0.8)


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("engines")
    export_renderer(out)
    return out / "renderer.json"


@pytest.fixture()
def graph(manifest_path: Path):
    g = GraphRenderer.load(manifest_path, "ort-cpu")
    yield g
    g.close()


def _inverted(pack):
    """A second, visibly different avatar with the same geometry."""
    import dataclasses

    return dataclasses.replace(pack, crop=255 - pack.crop, crop_no_iris=255 - pack.crop_no_iris,
                               crop_lids=255 - pack.crop_lids)


def test_missing_model_says_how_to_export(tmp_path: Path) -> None:
    with pytest.raises(GraphUnavailableError, match="vivify export"):
        GraphRenderer.load(tmp_path / "renderer.json", "ort-cpu")


def test_frames_match_the_cpu_renderer(graph: GraphRenderer, pack, renderer) -> None:
    graph.attach("a", pack)
    frames = graph.render(np.stack([rest_motion(), SPEECH]), ["a", "a"])
    assert frames.dtype == np.uint8 and frames.shape == (2, 512, 512, 3)
    assert np.array_equal(frames[0], pack.crop)  # at rest every pixel is the portrait's
    assert psnr(frames[1], renderer.render(SPEECH).image) >= 40.0
    assert not np.array_equal(frames[1], pack.crop)


def test_torch_twin_makes_the_same_uint8_frames(manifest_path: Path, graph: GraphRenderer,
                                               pack) -> None:
    """The torch runner (the CUDA path, here on the CPU) casts to uint8 on its device."""
    from vivify.engines.runtimes import ModelManifest
    from vivify.engines.runtimes.torch_runner import TorchConfig, TorchRunner

    twin = GraphRenderer(TorchRunner(ModelManifest.load(manifest_path), TorchConfig(device="cpu")),
                         graph.geometry)
    try:
        for g in (graph, twin):
            g.attach("a", pack)
        motions = np.stack([SPEECH, rest_motion()])
        got, ref = twin.render(motions, ["a", "a"]), graph.render(motions, ["a", "a"])
    finally:
        twin.close()
    assert got.dtype == np.uint8 and got.shape == ref.shape
    assert np.quantile(np.abs(got.astype(int) - ref), 0.999) <= 1


def test_one_call_mixes_avatars_and_stamps_each_session(graph: GraphRenderer, pack) -> None:
    other = _inverted(pack)
    graph.attach("a", pack)
    graph.attach("b", other)
    stamps = [ProvenanceStamp("session-a"), ProvenanceStamp("session-b")]
    reqs = [RenderRequest("a", SPEECH, stamps[0]), RenderRequest("b", SPEECH, stamps[1]),
            RenderRequest("a", rest_motion(), None)]
    out = graph.infer_requests(reqs)
    assert len(out) == 3
    plain = graph.render(np.stack([SPEECH, SPEECH]), ["a", "b"])
    for frame, ref, stamp in zip(out[:2], plain, stamps, strict=True):
        assert np.array_equal(frame, stamp.apply(ref.copy(), inplace=True))
    assert psnr(out[0], out[1]) < 15  # row 1 used the other avatar
    assert np.array_equal(out[2], pack.crop)  # unstamped request: untouched
    found = detect_frames([out[1]] * 3)
    assert found.present and found.payload is not None
    assert found.payload.session_hex == stamps[1].info.session_hash


def test_bank_counts_sessions_and_drops_rows_lazily(graph: GraphRenderer, pack) -> None:
    graph.attach("a", pack)
    graph.attach("a", pack)
    graph.attach("b", _inverted(pack))
    assert graph.avatars == {"a": 2, "b": 1}
    graph.detach("b")
    graph.detach("b")  # a second detach is harmless
    graph.render(SPEECH[None], ["b"])  # a request still in flight for b is served
    graph.attach("c", pack)  # the rebuild for c drops b's unused row
    assert graph.avatars == {"a": 2, "c": 1}
    with pytest.raises(KeyError, match="not attached"):
        graph.render(SPEECH[None], ["b"])
    graph.max_avatars = 2
    with pytest.raises(ValueError, match="bank is full"):
        graph.attach("d", pack)


def test_bigger_batches_than_the_profile_are_split(graph: GraphRenderer, pack) -> None:
    graph.attach("a", pack)
    graph.max_batch = 2
    motions = np.stack([clip_motion(SPEECH * s) for s in (0.0, 0.5, 1.0)])
    out = graph.render(motions, ["a"] * 3)
    assert out.shape[0] == 3
    assert np.array_equal(out[0], pack.crop)


def test_unsuitable_avatar_is_refused(graph: GraphRenderer, preparer, astronaut) -> None:
    from tests.support.images import png_bytes

    small = preparer.prepare(png_bytes(astronaut), size=256)
    with pytest.raises(ValueError, match="graph is 512"):
        graph.attach("small", small)
    assert graph.avatars == {}


def test_to_uint8_rounds_and_clips() -> None:
    got = to_uint8(np.array([-3.0, 0.4, 0.6, 254.5, 300.0], np.float32))
    assert got.tolist() == [0, 0, 1, 254, 255]
    already = np.arange(4, dtype=np.uint8)
    assert to_uint8(already) is not None and to_uint8(already).tolist() == [0, 1, 2, 3]


class InlineScheduler:
    async def run(self, fn: Any) -> Any:
        return fn()


def _played(renderer, render_batcher: WindowBatcher | None, audio: np.ndarray,
            stamp: ProvenanceStamp) -> list[AVPair]:
    """Every pair one session plays for ``audio`` (test_media's harness, on virtual time)."""
    played, _, _ = _run(renderer, len(audio) / 16000 + 0.6, live=False,
                        setup=lambda m: m.push_audio(audio), stamp=stamp,
                        render_batcher=render_batcher, render_key="default")
    return played


@pytest.mark.slow
def test_session_media_on_the_graph_matches_the_cpu_renderer(graph: GraphRenderer, pack,
                                                             renderer) -> None:
    """The same session (driver seed, audio) played through the graph's batcher and through
    the CPU renderer: the same speech frames in the same order, ≥ 40 dB apart, all stamped.

    Compared as the sequence of live (speech-carrying) pairs: with the inline scheduler the
    CPU path fills slot 0 before the ticker first runs, while the batcher's hop lets slot 0
    go out as the idle frame, so the graph path's speech starts one slot later here.
    """
    t = np.arange(int(1.2 * 16000)) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 170 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(
        np.float32)
    graph.attach("default", pack)
    batcher = WindowBatcher(graph, InlineScheduler(), max_batch=8)  # type: ignore[arg-type]
    got = [p for p in _played(renderer, batcher, audio, ProvenanceStamp("g")) if p.live]
    ref = [p for p in _played(renderer, None, audio, ProvenanceStamp("g")) if p.live]
    assert len(got) == len(ref) == 30  # 1.2 s of speech = 30 frames, none lost
    assert batcher.stats.windows >= len(got)
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(got, ref, strict=True))
    worst = min(psnr(a.image, b.image) for a, b in zip(got, ref, strict=True))
    assert worst >= 40.0, worst
    assert any(not np.array_equal(p.image, ref[0].image) for p in ref)  # the mouth moved
    found = detect_frames([p.image for p in got[:8]])
    assert found.present and found.payload is not None


def test_serve_without_an_exported_graph_exits_2(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from vivify.streamer.cli.main import main

    code = main(["serve", "--renderer", "graph", "--renderer-model",
                 str(tmp_path / "renderer.json"), "--port", "18099"])
    assert code == 2
    assert "vivify export" in capsys.readouterr().err


def test_io_binding_of_the_bank_gives_the_same_frames(manifest_path: Path, pack) -> None:
    """ONNX Runtime with the pinned bank bound once as OrtValues (what the CUDA/TensorRT
    providers do, to skip a bank upload per call), here on the CPU: identical frames."""
    from vivify.engines.runtimes import ModelManifest, OrtConfig, OrtRunner

    manifest = ModelManifest.load(manifest_path)
    bound = OrtRunner(manifest, OrtConfig(bind_pinned=True))
    plain = OrtRunner(manifest, OrtConfig())
    assert bound.binds_pinned and not plain.binds_pinned
    graphs = [GraphRenderer(r, GraphGeometry()) for r in (bound, plain)]
    try:
        for g in graphs:
            g.attach("a", pack)
            g.attach("b", _inverted(pack))
        motions = np.stack([SPEECH, rest_motion(), SPEECH])
        got, ref = (g.render(motions, ["a", "b", "b"]) for g in graphs)
        assert len(bound._bound) == 6  # every bank input bound once
    finally:
        for g in graphs:
            g.close()
    assert np.array_equal(got, ref)


class FailingEngine:
    """A renderer-graph engine that breaks (as a GPU out of memory would)."""

    def infer_requests(self, requests: list[RenderRequest]) -> list[np.ndarray]:
        raise RuntimeError("CUDA out of memory (simulated)")


def test_a_failing_graph_moves_the_session_to_the_cpu_renderer(renderer) -> None:
    """The session does not freeze: the same speech frames come from the CPU renderer."""
    t = np.arange(int(0.6 * 16000)) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 170 * t)).astype(np.float32)
    batcher = WindowBatcher(FailingEngine(), InlineScheduler(), max_batch=8)  # type: ignore[arg-type]
    got = [p for p in _played(renderer, batcher, audio, ProvenanceStamp("f")) if p.live]
    ref = [p for p in _played(renderer, None, audio, ProvenanceStamp("f")) if p.live]
    assert len(got) == len(ref) == 15
    assert all(np.array_equal(a.image, b.image) for a, b in zip(got, ref, strict=True))
