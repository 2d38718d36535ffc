"""Stage benchmark: every per-frame and per-window step of the pipeline, timed on its own.

Run ``make bench-stages`` (one core: ``taskset -c 0`` and one BLAS/OpenCV thread, so a figure
is the cost of one core's work) or ``python bench/stages.py --quick``. The JSON goes to
``--out`` (default bench/results/stages-<time>.json) and is rewritten after every stage, so a
failing or interrupted run keeps what it measured; a failing stage is named in ``failed`` with
its error and the run exits 1 after the others have run.

Stages (each a function below, in pipeline order):

``prepare``          avatar preparation (512² and, in full mode, a 4000×3000 photo), renderer
                     set-up, the espeak-ng test sentence and the baseline driver's motion for it.
``audio_features``   the causal log-mel front end, per video frame and per generator window.
``baseline_driver``  the rule-based driver, per frame (40 ms chunks pushed as when streaming).
``motion_generator`` the distilled ONNX generator through ``GeneratorRunner.infer`` at batch
                     1, 4 and 16, on every runtime of ``vivify.engines.runtimes`` that is *present*
                     (ORT CPU here; ORT CUDA/TensorRT, native TensorRT and torch CUDA only
                     when ``vivify.engines.runtimes.probe`` finds them; the others are listed with
                     the reason), plus the whole streaming path per window at batch 1.
``renderer``         one 512² crop per frame (first run and best of 3), every layer on.
``renderer_graph``   the exported, batched renderer graph at batch 1, 4, 16 on every runtime
                     present; skipped (not failed) when artifacts/engines/renderer.json is absent.
``paste_back``       crop → full 512² portrait and into a 1280×720 frame.
``encode_vp8`` / ``encode_h264``  aiortc's own encoders on the rendered frames, per frame,
                     with the bitrate they produced.
``offline_render``   ``vivify.streamer.offline.render.render_file`` as a multiple of real time.

Batching applies to the generator (its graph has a dynamic batch axis and the server stacks
sessions' windows) and to the exported renderer graph. Features, driver, CPU renderer and
encoders are per-session NumPy / OpenCV / libvpx work with no batch API, so they are reported
per item: a batch of N costs N×.

This VM's speed drifts by up to 2× between minutes; the renderer's best-of-3 figure and
``bench/compare.py`` (two versions alternated in one run) are the ones to compare versions by.
"""

from __future__ import annotations

import argparse
import dataclasses
import fractions
import functools
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

if __package__ in (None, ""):  # run as ``python bench/stages.py``: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.machine import machine_info
from bench.harness.modes import add_mode_arguments, mode_of, parse_subset
from bench.harness.results import write_json
from bench.harness.runner import StageRunner, elapsed, log, new_report

REPEATS = 3  # renders of each frame for the best-of figure
FRAME_MS = 40.0  # one video frame at 25 fps: the real-time budget of a per-frame stage
SENTENCE = ("The quick brown fox jumps over the lazy dog, and then it sings a little song about "
            "the morning sun.")
SHORT_SENTENCE = "Hello there, one two three."

@dataclass(frozen=True)
class Settings:
    """How much of each stage to run; recorded in the JSON."""

    mode: str = "full"
    render_frames: int | None = None  # None: the whole test sentence (~140 frames)
    layer_frames: int = 100
    paste_frames: int = 100
    feature_frames: int = 500
    driver_seconds: float = 10.0
    generator_windows: int = 400  # windows timed per batch size (calls = windows / batch)
    stream_seconds: float = 8.0
    batches: tuple[int, ...] = (1, 4, 16)
    encode_frames: int = 150
    graph_frames: int = 16  # renderer graph: frames timed per batch size (≥ 2 calls each)
    graph_cpu_batches: tuple[int, ...] = (1, 4, 16)  # the graph on ORT CPU: ~0.1–0.2 s a frame
    big_photo: bool = True
    offline_learned: bool = True
    sentence: str = SENTENCE

    @classmethod
    def for_mode(cls, mode: str) -> Settings:
        if mode == "full":
            return cls()
        if mode == "quick":
            return cls(mode="quick", render_frames=60, layer_frames=40, paste_frames=40,
                       feature_frames=200, driver_seconds=4.0, generator_windows=160,
                       stream_seconds=4.0, encode_frames=60, graph_frames=8, graph_cpu_batches=(1,),
                       big_photo=False)
        if mode == "tiny":  # the test's mode: every stage runs, on a handful of items
            return cls(mode="tiny", render_frames=6, layer_frames=4, paste_frames=4,
                       feature_frames=20, driver_seconds=1.0, generator_windows=32,
                       stream_seconds=1.0, encode_frames=8, graph_frames=2, graph_cpu_batches=(1,),
                       big_photo=False,
                       offline_learned=False, sentence=SHORT_SENTENCE)
        raise ValueError(f"mode: one of full, quick, tiny; got {mode!r}")


@dataclass
class Context:
    """What the ``prepare`` stage builds and the later stages use."""

    tmp: Path
    preparer: Any = None
    pack: Any = None
    renderer: Any = None
    wav: Path | None = None
    audio: np.ndarray | None = None
    motions: np.ndarray | None = None
    crops: list[np.ndarray] = field(default_factory=list)

    def need(self, name: str) -> Any:
        value = getattr(self, name)
        if value is None or (isinstance(value, list) and not value):
            raise RuntimeError(f"needs {name!r}, which an earlier stage did not produce")
        return value


def stats(samples: list[float] | np.ndarray) -> dict[str, float | int]:
    """Median, p95 and count of durations given in seconds, in ms."""
    ms = np.asarray(samples, np.float64) * 1e3
    return {"median_ms": round(float(np.median(ms)), 3),
            "p95_ms": round(float(np.percentile(ms, 95)), 3), "n": int(ms.size)}


def timed(fn: Callable[[], object], n: int, warmup: int = 2) -> list[float]:
    """``n`` wall-clock durations of ``fn()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _speech(text: str, path: Path) -> None:
    """``text`` spoken into ``path`` with espeak-ng's own default voice and speed (the figures
    per sentence stay comparable with earlier runs)."""
    from vivify.engines.audio.espeak import speak_to_wav

    speak_to_wav(text, path, voice="en", speed=175, timeout=60)


# ============================================================================ stages


def stage_prepare(ctx: Context, s: Settings) -> dict[str, Any]:
    from skimage import data

    from vivify.engines.audio.audio_io import load_audio
    from vivify.engines.avatar.pack import AvatarPreparer
    from vivify.engines.motion.baseline import BaselineConfig, BaselineDriver
    from vivify.engines.render.renderer import Renderer

    out: dict[str, Any] = {}
    astronaut = np.ascontiguousarray(data.astronaut())
    ctx.preparer = AvatarPreparer(cache_dir=ctx.tmp)
    ctx.preparer.prepare(_png(astronaut), use_cache=False)  # warm the interpreters
    t = time.perf_counter()
    ctx.pack = ctx.preparer.prepare(_png(astronaut), use_cache=False)
    out["prepare_512_s"] = round(time.perf_counter() - t, 3)
    if s.big_photo:
        big = np.full((3000, 4000, 3), 200, np.uint8)
        big[700:2236, 1200:2736] = cv2.resize(astronaut, (1536, 1536))
        t = time.perf_counter()
        ctx.preparer.prepare(_png(big), use_cache=False)
        out["prepare_4000x3000_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    ctx.renderer = Renderer(ctx.pack)
    out["renderer_init_s"] = round(time.perf_counter() - t, 3)
    ctx.wav = ctx.tmp / "speech.wav"
    _speech(s.sentence, ctx.wav)
    ctx.audio = load_audio(ctx.wav)
    # A realistic motion stream for the renderer and encoders: the baseline driver's.
    ctx.motions = BaselineDriver(BaselineConfig()).drive(ctx.audio)
    out["sentence_s"] = round(ctx.audio.size / 16_000, 2)
    return out


def stage_audio_features(ctx: Context, s: Settings) -> dict[str, Any]:
    from vivify.engines.motion.generator import (
        FRAME_CONTEXT_SAMPLES,
        SAMPLES_PER_FRAME,
        frame_log_mel,
    )

    audio = ctx.need("audio")
    span = FRAME_CONTEXT_SAMPLES + SAMPLES_PER_FRAME
    starts = np.arange(0, max(1, audio.size - span), SAMPLES_PER_FRAME)
    blocks = [np.ascontiguousarray(audio[i:i + span]) for i in starts[:s.feature_frames]]
    blocks = [b for b in blocks if b.size == span] or [np.zeros(span, np.float32)]
    it = iter(range(10**9))
    per_frame = timed(lambda: frame_log_mel(blocks[next(it) % len(blocks)]), s.feature_frames)
    st = stats(per_frame)
    return {"per_frame": st, "per_window_ms": round(2 * st["median_ms"], 3),
            "share_of_frame_budget": round(st["median_ms"] / FRAME_MS, 4),
            "batch": "n/a: computed per session per frame from a fixed (4, 512) block, so "
                     "streaming is bit-identical to offline; N sessions cost N×"}


def stage_baseline_driver(ctx: Context, s: Settings) -> dict[str, Any]:
    from vivify.engines.audio.audio_io import SAMPLES_PER_FRAME
    from vivify.engines.motion.baseline import BaselineConfig, BaselineDriver

    audio = ctx.need("audio")
    n = int(s.driver_seconds * 25)
    reps = -(-n * SAMPLES_PER_FRAME // audio.size)
    x = np.tile(audio, reps)[:n * SAMPLES_PER_FRAME]
    driver = BaselineDriver(BaselineConfig())
    per_push: list[float] = []
    frames = 0
    for k in range(n):
        t = time.perf_counter()
        frames += len(driver.push(x[k * SAMPLES_PER_FRAME:(k + 1) * SAMPLES_PER_FRAME]))
        per_push.append(time.perf_counter() - t)
    st = stats(per_push[2:] or per_push)
    return {"per_frame": st, "frames": frames,
            "share_of_frame_budget": round(st["median_ms"] / FRAME_MS, 4),
            "batch": "n/a: per-session rules in NumPy, no batch API"}


def _generator_inputs(spec: Any, audio: np.ndarray, batch: int,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    from vivify.engines.motion.generator import log_mel_frames
    from vivify.engines.motion.vector import rest_motion

    feats = log_mel_frames(audio)  # (frames, 4, 40)
    t = spec.context_frames
    mels = []
    for _ in range(batch):
        start = int(rng.integers(0, max(1, feats.shape[0] - t)))
        window = feats[start:start + t]
        if window.shape[0] < t:
            window = np.concatenate([window, np.repeat(window[-1:], t - window.shape[0], 0)])
        mels.append(window.reshape(t * spec.mels_per_frame, spec.n_mels))
    return {"mel": np.stack(mels).astype(np.float32),
            "past": np.tile(rest_motion(), (batch, spec.cache, 1)).astype(np.float32),
            "controls": np.zeros((batch, spec.control_dim), np.float32),
            "noise": rng.standard_normal((batch, spec.window, spec.motion_dim)).astype(
                np.float32)}


PROVIDER_RUNTIME = {"CPUExecutionProvider": "ort-cpu", "CUDAExecutionProvider": "ort-cuda",
                    "TensorrtExecutionProvider": "ort-tensorrt"}


def _runtimes() -> dict[str, str | None]:
    """Every generator runtime known → None if it can run here, else why not. Detected by
    ``vivify.engines.runtimes.probe`` (GPU visible? providers? TensorRT importable?), never assumed;
    code from before vivify.engines.runtimes (bench/compare.py on an old sha): ORT providers
    only."""
    try:
        from vivify.engines.runtimes import RUNTIMES, probe
    except ImportError:
        import onnxruntime as ort

        present = ort.get_available_providers()
        return {rt: None if p in present else f"onnxruntime has no {p}"
                for p, rt in PROVIDER_RUNTIME.items()}
    found = probe()
    return {rt: found.why_not(rt) for rt in RUNTIMES}


def _runner(runtime: str) -> Any:
    """A GeneratorRunner on ``runtime`` with one intra-op thread (as the server makes it)."""
    from vivify.engines.motion.generator import GeneratorRunner

    if runtime == "ort-cpu":
        return GeneratorRunner(threads=1)
    return GeneratorRunner(threads=1, runtime=runtime)


def stage_motion_generator(ctx: Context, s: Settings) -> dict[str, Any]:
    from vivify.engines.motion.generator import MotionGenerator

    audio = ctx.need("audio")
    runner = _runner("ort-cpu")
    spec = runner.spec
    window_ms = spec.window * FRAME_MS
    runtimes = _runtimes()
    out: dict[str, Any] = {
        "runtimes_skipped": {k: v for k, v in runtimes.items() if v is not None},
        "window_frames": spec.window, "lookahead_frames": spec.lookahead,
        "window_video_ms": window_ms, "model_sha256": runner.manifest.get("sha256"),
        "intra_op_threads": 1, "runtimes": {}}
    rng = np.random.default_rng(0)
    for name, why_not in runtimes.items():
        if why_not is not None:
            log("motion_generator", f"{name}: not here ({why_not})")
            continue
        r = runner if name == "ort-cpu" else _runner(name)
        rows = {}
        for b in s.batches:
            feeds = _generator_inputs(spec, audio, b, rng)
            calls = max(4, s.generator_windows // b)

            def call(r: Any = r, f: dict[str, np.ndarray] = feeds) -> object:
                return r.infer(**f)
            st = stats(timed(call, calls, warmup=3))
            per_window = st["median_ms"] / b
            rows[str(b)] = {"per_call": st, "per_window_ms": round(per_window, 4),
                            "windows_per_s": round(1e3 / per_window, 1),
                            "sessions_one_core_feeds": round(window_ms / per_window, 1)}
            log("motion_generator", f"{name} batch {b}: {st['median_ms']:.3f} ms per call, "
                                    f"{per_window:.3f} ms per window")
        out["runtimes"][name] = rows
    # The whole streaming path of one session: features + model + cache, per window.
    gen = MotionGenerator(runner, seed=0)
    chunk = spec.window * 640
    n = max(4, int(s.stream_seconds * 25 / spec.window))
    x = np.tile(audio, -(-n * chunk // audio.size) + 1)
    per_push: list[float] = []
    windows = 0
    for k in range(n + spec.lookahead):
        t = time.perf_counter()
        got = gen.push(x[k * chunk:(k + 1) * chunk])
        if len(got):
            per_push.append(time.perf_counter() - t)
            windows += 1
    out["streaming_per_window"] = stats(per_push[2:] or per_push)
    out["streaming_windows"] = windows
    return out


def stage_renderer(ctx: Context, s: Settings) -> dict[str, Any]:
    from vivify.engines.motion.vector import motion

    renderer = ctx.need("renderer")
    motions = ctx.need("motions")
    if s.render_frames is not None:
        motions = motions[:s.render_frames]
    first: list[float] = []
    best: list[float] = []
    ctx.crops = []
    for m in motions:
        runs = []
        for _ in range(REPEATS):
            t = time.perf_counter()
            image = renderer.render(m).image
            runs.append(time.perf_counter() - t)
        ctx.crops.append(image)
        first.append(runs[0])
        best.append(min(runs))
    skip = 5 if len(first) > 10 else 1
    # Worst case: mouth cut, gaze, half-closed lids and a turned head all at once.
    worst = motion(jaw_open=0.7, lip_stretch=0.4, gaze_x=0.6, blink_l=0.8, blink_r=0.8,
                   head_yaw=0.5, head_roll=-0.3)
    layers = timed(lambda: renderer.render(worst), s.layer_frames, warmup=3)
    st = stats(best[skip:])
    return {"per_frame": stats(first[skip:]), "per_frame_best_of_3": st,
            "all_layers": stats(layers),
            "share_of_frame_budget": round(st["median_ms"] / FRAME_MS, 4),
            "batch": "n/a: one cv2.remap + layers per frame; no batch API (a GPU renderer "
                     "would batch)"}


RENDERER_MANIFEST = Path(__file__).resolve().parent.parent / "artifacts/engines/renderer.json"


def stage_renderer_graph(ctx: Context, s: Settings) -> dict[str, Any]:
    """The batched renderer graph (``vivify export`` → ``renderer.onnx``, for GPU runtimes) at
    batch 1, 4, 16 on every runtime present. Optional: without the exported model (it needs
    the export extra) the stage says so and is not a failure."""
    path = Path(os.environ.get("VIVIFY_BENCH_RENDERER_MANIFEST", RENDERER_MANIFEST))
    if not path.is_file():
        return {"skipped": f"no {path}: `vivify export --out artifacts/engines` builds it "
                           "(export extra, torch)"}
    from vivify.engines.runtimes import RUNTIMES, ModelManifest, create_runner, probe
    from vivify.engines.runtimes.renderer_bank import BANK_INPUTS, build_bank, renderer_feeds

    manifest = ModelManifest.load(path)
    found = probe()
    bank = build_bank([ctx.need("pack")])
    motions = ctx.need("motions")
    out: dict[str, Any] = {"manifest": str(path), "runtimes": {}, "runtimes_skipped": {}}
    for name in RUNTIMES:
        why = found.why_not(name, manifest)
        if why is not None:
            out["runtimes_skipped"][name] = why
            continue
        rows = {}
        with create_runner(manifest, name, availability=found, threads=1) as runner:
            runner.pin({k: bank[k] for k in BANK_INPUTS})
            for b in s.graph_cpu_batches if name == "ort-cpu" else s.batches:
                feeds = {k: v for k, v in renderer_feeds(bank, np.resize(motions, (b, 19))
                                                         ).items() if k not in BANK_INPUTS}
                calls = max(2, s.graph_frames // b)

                def call(r: Any = runner, f: dict[str, np.ndarray] = feeds) -> object:
                    return r.infer(f)
                st = stats(timed(call, calls, warmup=1))
                rows[str(b)] = {"per_call": st,
                                "per_frame_ms": round(st["median_ms"] / b, 3),
                                "frames_per_s": round(1e3 * b / st["median_ms"], 1)}
                log("renderer_graph", f"{name} batch {b}: {st['median_ms']:.1f} ms per call")
        out["runtimes"][name] = rows
    return out


def stage_paste_back(ctx: Context, s: Settings) -> dict[str, Any]:
    from skimage import data

    from vivify.engines.render.renderer import Renderer

    renderer = ctx.need("renderer")
    crops = ctx.need("crops")[:s.paste_frames]
    full: list[float] = []
    for crop in crops:
        t = time.perf_counter()
        renderer.paste_back(crop)
        full.append(time.perf_counter() - t)
    wide = np.full((720, 1280, 3), 90, np.uint8)
    wide[104:616, 384:896] = np.ascontiguousarray(data.astronaut())
    r720 = Renderer(ctx.preparer.prepare(_png(wide), use_cache=False))
    motions = ctx.need("motions")[:s.paste_frames]
    crops720 = [r720.render(m).image for m in motions]
    wide_t = []
    for crop in crops720:
        t = time.perf_counter()
        r720.paste_back(crop)
        wide_t.append(time.perf_counter() - t)
    return {"full_512": stats(full) | {"size": list(ctx.pack.full.shape[:2])},
            "frame_720p": stats(wide_t)}


def _encode(ctx: Context, s: Settings, codec: str) -> dict[str, Any]:
    import av

    if codec == "vp8":
        from aiortc.codecs.vpx import Vp8Encoder as Encoder
    else:
        from aiortc.codecs.h264 import H264Encoder as Encoder  # type: ignore[assignment]
    crops = ctx.need("crops")
    encoder = Encoder()
    base = fractions.Fraction(1, 90_000)
    times: list[float] = []
    sizes: list[int] = []
    for i in range(s.encode_frames + 3):
        frame = av.VideoFrame.from_ndarray(crops[i % len(crops)], format="rgb24")
        frame.pts, frame.time_base = i * 3600, base
        t = time.perf_counter()
        payloads, _ = encoder.encode(frame)
        if i >= 3:  # the first frames are keyframes and encoder set-up
            times.append(time.perf_counter() - t)
            sizes.append(sum(len(p) for p in payloads))
    st = stats(times)
    return {"per_frame": st, "share_of_frame_budget": round(st["median_ms"] / FRAME_MS, 4),
            "kbps_at_25fps": round(float(np.mean(sizes)) * 8 * 25 / 1e3, 1),
            "size": list(crops[0].shape[:2]), "encoder": Encoder.__name__,
            "input": "rgb24 512² crops (as the server's video track hands them to aiortc)",
            "batch": "n/a: one encoder per stream, frames in order"}


def stage_encode_vp8(ctx: Context, s: Settings) -> dict[str, Any]:
    return _encode(ctx, s, "vp8")


def stage_encode_h264(ctx: Context, s: Settings) -> dict[str, Any]:
    return _encode(ctx, s, "h264")


def stage_offline_render(ctx: Context, s: Settings) -> dict[str, Any]:
    from vivify.streamer.offline.render import RenderOptions, render_file

    wav = ctx.need("wav")
    png = ctx.tmp / "astronaut.png"
    from skimage import data

    png.write_bytes(_png(np.ascontiguousarray(data.astronaut())))
    out: dict[str, Any] = {}
    for driver in ("baseline", "learned") if s.offline_learned else ("baseline",):
        rep = render_file(png, wav, ctx.tmp / f"out-{driver}.mp4",
                          options=RenderOptions(driver=driver), preparer=ctx.preparer)
        out[driver] = {"audio_s": round(rep.audio_seconds, 2), "wall_s": round(rep.wall_seconds, 2),
                       "x_realtime": round(rep.realtime_factor, 2), "frames": rep.frames}
        log("offline_render", f"{driver}: {rep.realtime_factor:.2f}× real time")
    out["x_realtime"] = out["baseline"]["x_realtime"]
    out["note"] = ("512² crop, H.264/AAC MP4, incl. preparation (cached pack) and watermarking; "
                   "on whatever cores the process may use")
    return out


STAGES: dict[str, Callable[[Context, Settings], dict[str, Any]]] = {
    "prepare": stage_prepare, "audio_features": stage_audio_features,
    "baseline_driver": stage_baseline_driver, "motion_generator": stage_motion_generator,
    "renderer": stage_renderer, "renderer_graph": stage_renderer_graph,
    "paste_back": stage_paste_back,
    "encode_vp8": stage_encode_vp8, "encode_h264": stage_encode_h264,
    "offline_render": stage_offline_render,
}


# ============================================================================ run


def run(settings: Settings, out: Path, only: tuple[str, ...] | None = None,
        fail: str | None = None) -> dict[str, Any]:
    """Run the stages in order, each in its own try; the report, also saved after each."""
    cv2.setNumThreads(1)
    report = new_report(settings=dataclasses.asdict(settings), machine=machine_info())
    runner = StageRunner(report, lambda: write_json(out, report), fail=fail, digits=2)
    with tempfile.TemporaryDirectory(prefix="vivify-stages-") as tmp:
        ctx = Context(tmp=Path(tmp))
        for name, fn in STAGES.items():
            if only and name not in only:
                continue
            log(name, "start")
            runner.run(name, functools.partial(fn, ctx, settings))
            if name not in report["failed"]:
                log(name, f"done in {report['stages'][name]['wall_s']} s")
    report["total_s"] = round(elapsed(), 1)
    write_json(out, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_mode_arguments(parser, quick="fewer items; skip the big photo",
                       tiny="a handful of items (tests)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--fail", metavar="STAGE", help=argparse.SUPPRESS)  # test hook
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    settings = Settings.for_mode(mode_of(args))
    only = parse_subset(args.only, STAGES, "stage")
    path = args.out or Path("bench/results") / f"stages-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report = run(settings, path, only, args.fail)
    for name, st in report["stages"].items():
        print(f"{name:18s} {'FAILED: ' + st['error'] if 'error' in st else 'ok'}"
              f"  ({st['wall_s']} s)")
    print(f"written to {path}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
