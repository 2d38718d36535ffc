"""``python -m vivify.export.onnx_export``: the student → one ONNX graph + manifest, with a parity
check.

The graph is the whole sampler: audio encoder once, ``student_steps`` Euler steps unrolled,
normalisation folded in. Inputs ``mel`` (B, 4T, 40), ``past`` (B, K, 19), ``controls`` (B, 7),
``noise`` (B, W, 19) — the noise is an input so the run-time owns the random stream and
streaming stays bit-identical to offline; output ``motion`` (B, W, 19), raw rig units. The batch
axis is dynamic so one call serves many sessions.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import torch

from vivify.engines.motion.generator import INPUT_NAMES, OUTPUT_NAME, sha256_file
from vivify.engines.motion.generator_config import GeneratorConfig
from vivify.engines.runtimes.torch_models.generator import Student
from vivify.export.train import load

OPSET = 17
PARITY_TOL = 1e-4  # max |torch − ORT| in rig units, the bar
PARITY_BATCHES = (1, 16)


def example_inputs(cfg: GeneratorConfig, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    mel = torch.rand((batch, cfg.context_frames * cfg.mels_per_frame, cfg.n_mels),
                     generator=g) * 2 - 1.5
    past = torch.randn((batch, cfg.cache, cfg.motion_dim), generator=g) * 0.1
    controls = torch.zeros((batch, cfg.control_dim))
    noise = torch.randn((batch, cfg.window, cfg.motion_dim), generator=g)
    return mel, past, controls, noise


def export(student_path: Path, out_dir: Path, name: str = "motion_generator") -> dict:
    flow = load(student_path)
    cfg = flow.cfg
    student = Student(flow).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{name}.onnx"
    dyn = {k: {0: "batch"} for k in (*INPUT_NAMES, OUTPUT_NAME)}
    with torch.no_grad():
        torch.onnx.export(student, example_inputs(cfg, 2), str(onnx_path), dynamo=False,
                          input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                          dynamic_axes=dyn, opset_version=OPSET, do_constant_folding=True)
    model = onnx.load(str(onnx_path))
    for key, value in (("config", cfg.to_json()), ("rig_version", cfg.rig_version),
                       ("sampler", f"rectified flow, {cfg.student_steps} Euler steps, distilled")):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))
    parity = check_parity(student, onnx_path, cfg)
    manifest = {
        "name": name,
        "file": onnx_path.name,
        "sha256": sha256_file(onnx_path),
        "bytes": onnx_path.stat().st_size,
        "rig_version": cfg.rig_version,
        "opset": OPSET,
        "torch_factory": "vivify.engines.runtimes.torch_models.generator_twin:GeneratorTwin",
        "config": asdict(cfg),
        "inputs": {
            "mel": ["batch", cfg.context_frames * cfg.mels_per_frame, cfg.n_mels],
            "past": ["batch", cfg.cache, cfg.motion_dim],
            "controls": ["batch", cfg.control_dim],
            "noise": ["batch", cfg.window, cfg.motion_dim],
        },
        "outputs": {OUTPUT_NAME: ["batch", cfg.window, cfg.motion_dim]},
        "parity": parity,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
    }
    (out_dir / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def check_parity(student: Student, onnx_path: Path, cfg: GeneratorConfig) -> dict:
    """Max |torch − ORT| over random and real-looking inputs at batch 1 and 16."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in PARITY_BATCHES:
        inputs = example_inputs(cfg, batch, seed=batch)
        with torch.no_grad():
            ref = student(*inputs).numpy()
        got = sess.run([OUTPUT_NAME], {n: t.numpy() for n, t in zip(INPUT_NAMES, inputs,
                                                                     strict=True)})[0]
        worst = max(worst, float(np.max(np.abs(ref - got))))
    if worst > PARITY_TOL:
        raise RuntimeError(f"ONNX parity {worst:.2e} exceeds {PARITY_TOL:.0e}")
    return {"max_abs_diff": worst, "tolerance": PARITY_TOL, "batches": list(PARITY_BATCHES)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--student", type=Path, default=Path("artifacts/generator/student.pt"))
    p.add_argument("--out", type=Path, default=Path("models"))
    args = p.parse_args()
    t0 = time.perf_counter()
    m = export(args.student, args.out)
    print(json.dumps({"file": m["file"], "bytes": m["bytes"], "sha256": m["sha256"],
                      "parity": m["parity"], "seconds": time.perf_counter() - t0}, indent=2))


if __name__ == "__main__":
    main()
