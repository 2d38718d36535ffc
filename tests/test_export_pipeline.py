"""The recipe end to end on a tiny config (CI keeps the recipe honest): corpus → teacher →
distilled student → ONNX with parity → the run-time streams it. Needs torch (``.[export]``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.media import have_espeak

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed")]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    from vivify.engines.motion.generator_config import TINY
    from vivify.export.data.build import build
    from vivify.export.distill import distill
    from vivify.export.onnx_export import export
    from vivify.export.train import train

    root = tmp_path_factory.mktemp("recipe")
    torch.set_num_threads(1)
    build(root / "corpus", seed=0, scale=0.01, workers=1)
    train(root / "corpus", root / "teacher.pt", TINY, steps=8, batch=16, lr=1e-3, seed=0,
          log_every=4)
    distill([root / "teacher.pt"], root / "corpus", root / "student.pt", n_pairs=32, steps=4,
            batch=8, lr=1e-4, seed=0)
    export(root / "student.pt", root / "models")
    return root


def test_checkpoint_carries_frozen_config(built: Path) -> None:
    from vivify.engines.motion.generator_config import TINY, GeneratorConfig

    ckpt = torch.load(built / "student.pt", weights_only=False)
    assert GeneratorConfig.from_dict(ckpt["config"]) == TINY
    assert ckpt["distill"]["steps"] == 4


def test_onnx_metadata_manifest_and_parity(built: Path) -> None:
    import onnx

    manifest = json.loads((built / "models" / "motion_generator.json").read_text())
    assert manifest["parity"]["max_abs_diff"] <= 1e-4
    model = onnx.load(str(built / "models" / manifest["file"]))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["config"])["window"] == manifest["config"]["window"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_runtime_streams_the_exported_model(built: Path) -> None:
    from vivify.engines.motion.generator import GeneratorRunner, MotionGenerator

    runner = GeneratorRunner(built / "models" / "motion_generator.json")
    audio = (0.05 * np.random.default_rng(0).standard_normal(9000)).astype(np.float32)
    ref = MotionGenerator(runner, seed=1).drive(audio)
    gen = MotionGenerator(runner, seed=1)
    out = np.concatenate([gen.push(audio[:333]), gen.push(audio[333:]), gen.flush()])
    assert np.array_equal(out, ref)


def test_config_validation() -> None:
    from vivify.engines.motion.generator_config import GeneratorConfig

    with pytest.raises(ValueError, match="window"):
        GeneratorConfig(window=3, lookahead=2)
    with pytest.raises(ValueError, match="teacher_steps"):
        GeneratorConfig(teacher_steps=8)
    with pytest.raises(ValueError, match="unknown"):
        GeneratorConfig.from_dict({"bogus": 1})


def test_calibration_maps_the_shown_mouth_and_streams_the_same(built: Path) -> None:
    """``vivify.export.calibrate`` fits quantile maps on training clips into the manifest; the
    run-time applies them to the frames shown (streaming still equals offline)."""
    import shutil

    from vivify.engines.motion.generator import GeneratorRunner, MotionGenerator
    from vivify.engines.motion.vector import INDEX
    from vivify.export.calibrate import CALIBRATED, main

    models = built / "calibrated"
    shutil.copytree(built / "models", models)
    manifest = models / "motion_generator.json"
    assert main(["--manifest", str(manifest), "--corpus", str(built / "corpus"),
                 "--clips", "4", "--mouth-noise", "1.0"]) == 0  # sampling as the plain model
    written = json.loads(manifest.read_text())
    assert written["sampling"] == {"mouth_noise": 1.0}
    knots = written["calibration"]["knots"]
    assert set(knots) == set(CALIBRATED)
    for xp, fp in knots.values():
        assert np.all(np.diff(xp) > 0) and np.all(np.diff(fp) >= 0)
    audio = (0.05 * np.random.default_rng(0).standard_normal(9000)).astype(np.float32)
    plain = MotionGenerator(GeneratorRunner(built / "models" / "motion_generator.json"),
                            seed=1).drive(audio)
    runner = GeneratorRunner(manifest)
    shown = MotionGenerator(runner, seed=1).drive(audio)
    gen = MotionGenerator(runner, seed=1)
    streamed = np.concatenate([gen.push(audio[:333]), gen.push(audio[333:]), gen.flush()])
    assert np.array_equal(streamed, shown)
    d = INDEX["jaw_open"]
    xp, fp = knots["jaw_open"]
    assert np.allclose(shown[:, d], np.clip(np.interp(plain[:, d], xp, fp), 0, 1), atol=1e-6)
    untouched = [i for i in range(shown.shape[1]) if i not in {INDEX[n] for n in CALIBRATED}]
    assert np.array_equal(shown[:, untouched], plain[:, untouched])  # the cache is the model's


def test_the_mouth_noise_factor_quiets_the_mouth_and_keeps_streaming_exact(built: Path) -> None:
    import shutil

    from vivify.engines.motion.generator import GeneratorRunner, MotionGenerator
    from vivify.export.calibrate import main

    models = built / "quiet"
    shutil.copytree(built / "models", models)
    manifest = models / "motion_generator.json"
    assert main(["--manifest", str(manifest), "--corpus", str(built / "corpus"), "--clips", "2",
                 "--mouth-noise", "0.0"]) == 0
    runner = GeneratorRunner(manifest)
    audio = (0.05 * np.random.default_rng(0).standard_normal(9000)).astype(np.float32)
    one, two = (MotionGenerator(runner, seed=s).drive(audio) for s in (1, 2))
    assert not np.array_equal(one, two)  # life (blinks, sway, gaze) still varies with the seed
    gen = MotionGenerator(runner, seed=1)
    streamed = np.concatenate([gen.push(audio[:333]), gen.push(audio[333:]), gen.flush()])
    assert np.array_equal(streamed, one)


def test_without_mouth_cache_the_mouth_comes_from_the_audio_alone() -> None:
    """``mouth_cache`` False: a cache differing only in its mouth dims gives the same velocity
    (the labels' anticipation in a training cache can't leak), other dims still count; old
    checkpoints, without the field, load with the cache's mouth seen, as they were trained."""
    import dataclasses

    import torch

    from vivify.engines.motion.generator_config import MOUTH_DIMS, TINY, GeneratorConfig
    from vivify.engines.runtimes.torch_models.generator import MotionFlow

    def velocities(cfg: GeneratorConfig, dims: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        model = MotionFlow(cfg).eval()
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, cfg.window, cfg.motion_dim, generator=g)
        past = torch.randn(2, cfg.cache, cfg.motion_dim, generator=g)
        mel = torch.randn(2, 4 * cfg.context_frames, cfg.n_mels, generator=g)
        ctrl, t = torch.zeros(2, cfg.control_dim), torch.full((2,), 0.5)
        other = past.clone()
        other[..., dims] += 3.0
        with torch.no_grad():
            a = model.encode(mel)
            return (model.velocity(x, t, past, a, ctrl, model.prior_mean(a)),
                    model.velocity(x, t, other, a, ctrl, model.prior_mean(a)))

    mouth, head = list(MOUTH_DIMS), [d for d in range(TINY.motion_dim) if d not in MOUTH_DIMS]
    assert not TINY.mouth_cache
    torch.testing.assert_close(*velocities(TINY, mouth))
    assert not torch.allclose(*velocities(TINY, head))
    seen = dataclasses.replace(TINY, mouth_cache=True)
    assert not torch.allclose(*velocities(seen, mouth))
    old = {k: v for k, v in dataclasses.asdict(TINY).items() if k != "mouth_cache"}
    assert GeneratorConfig.from_dict(old).mouth_cache


def test_the_teacher_runs_behind_the_run_time_interface(built: Path) -> None:
    """``make eval`` scores the teacher through the run-time's streaming session (it crashed
    twice when the runner interface grew: the noise scale, then the noise memory)."""
    from vivify.export.evaluate import TorchRunner, streaming_session

    runner = TorchRunner(built / "teacher.pt")
    audio = (0.05 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32)
    out = streaming_session(runner, seed=0).drive(audio)
    assert out.shape == (13, 19) and np.isfinite(out).all()


def test_an_ensemble_target_is_the_mean_of_its_teachers(built: Path) -> None:
    """``distill --teacher A --teacher B``: each pair's target is the mean of the teachers'
    samples from the same noise and context; one teacher gives exactly the plain pairs, and
    teachers from other recipes (another config) are refused before any work."""
    import dataclasses

    from vivify.engines.motion.generator_config import TINY
    from vivify.engines.runtimes.torch_models.generator import MotionFlow
    from vivify.export.dataset import WindowSampler
    from vivify.export.distill import check_ensemble, distill, make_pairs
    from vivify.export.train import load, train

    other_path = built / "teacher-seed1.pt"
    train(built / "corpus", other_path, TINY, steps=8, batch=16, lr=1e-3, seed=1, log_every=4)
    first, other = load(built / "teacher.pt"), load(other_path)
    data = WindowSampler(built / "corpus", TINY)
    a, b = (make_pairs([t], data, 16, seed=3) for t in (first, other))
    both = make_pairs([first, other], data, 16, seed=3)
    assert torch.equal(both["noise"], a["noise"]) and torch.equal(both["mel"], b["mel"])
    assert not torch.allclose(a["x0"], b["x0"])  # two seeds do differ
    torch.testing.assert_close(both["x0"], (a["x0"] + b["x0"]) / 2)

    info = distill([built / "teacher.pt", other_path], built / "corpus", built / "ens.pt",
                   n_pairs=16, steps=2, batch=8, lr=1e-4, seed=0)
    assert info["teachers"] == [str(built / "teacher.pt"), str(other_path)]
    wider = MotionFlow(dataclasses.replace(TINY, d_model=TINY.d_model * 2))
    with pytest.raises(ValueError, match="config"):
        check_ensemble([first, wider])


def test_the_closure_head_trains_the_encoder_and_stays_out_of_the_graph(built: Path) -> None:
    """``closure_head`` > 0: the teacher's loss gains exactly weight × the head's
    cross-entropy on the encoded audio, whose gradient reaches the encoder and not the
    denoiser; the head is not part of the exported student, and the torch twin still rebuilds
    the student from the ONNX file alone."""
    import copy
    import dataclasses

    import onnx
    import onnxruntime as ort

    from vivify.engines.motion.generator import INPUT_NAMES
    from vivify.engines.motion.generator_config import TINY
    from vivify.engines.runtimes import ModelManifest
    from vivify.engines.runtimes.torch_models.generator import MotionFlow
    from vivify.engines.runtimes.torch_models.generator_twin import GeneratorTwin
    from vivify.export.dataset import WindowSampler
    from vivify.export.distill import distill
    from vivify.export.onnx_export import example_inputs, export
    from vivify.export.train import flow_loss, frame_class_loss, train

    cfg = dataclasses.replace(TINY, closure_head=0.5)
    torch.manual_seed(0)
    model = MotionFlow(cfg)
    plain = copy.deepcopy(model)
    plain.cfg = TINY
    batch = WindowSampler(built / "corpus", cfg).sample(16, np.random.default_rng(0))
    with_head = flow_loss(model, batch, torch.Generator().manual_seed(5))
    without = flow_loss(plain, batch, torch.Generator().manual_seed(5))
    ce = frame_class_loss(model, model.encode(batch["mel"]), batch["classes"])
    torch.testing.assert_close(with_head, without + 0.5 * ce)
    ce.backward()
    assert model.encoder.inp.weight.grad is not None
    assert float(model.encoder.inp.weight.grad.abs().max()) > 0.0
    assert all(p.grad is None for p in model.blocks.parameters())

    train(built / "corpus", built / "aux.pt", cfg, steps=8, batch=16, lr=1e-3, seed=0,
          log_every=4)
    distill([built / "aux.pt"], built / "corpus", built / "aux-student.pt", n_pairs=32,
            steps=2, batch=8, lr=1e-4, seed=0)
    export(built / "aux-student.pt", built / "aux-models")
    manifest = ModelManifest.load(built / "aux-models" / "motion_generator.json")
    graph = onnx.load(str(manifest.onnx_path)).graph
    assert not [i.name for i in graph.initializer if "frame_head" in i.name]
    inputs = example_inputs(cfg, 2, seed=1)
    feeds = {n: t.numpy() for n, t in zip(INPUT_NAMES, inputs, strict=True)}
    ref = ort.InferenceSession(str(manifest.onnx_path),
                               providers=["CPUExecutionProvider"]).run(["motion"], feeds)[0]
    with torch.no_grad():
        got = GeneratorTwin.from_manifest(manifest)(*inputs).numpy()
    assert float(np.abs(got - ref).max()) <= 1e-4
