"""Offline render: portrait + audio file → H.264/AAC MP4, any duration, bounded memory.

The loop is the streaming loop run as fast as the CPU allows: audio is decoded in one-second
chunks, the driver turns each chunk into the motion frames it completes, the renderer draws
them, and the writer muxes frames and the same audio. Nothing holds more than a chunk, so a
two-hour file costs the same memory as a two-second one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vivify.engines.audio.audio_io import SAMPLE_RATE, iter_audio, probe_duration
from vivify.engines.avatar.pack import DEFAULT_SIZE, AvatarPreparer
from vivify.engines.motion.baseline import BaselineConfig, BaselineDriver
from vivify.engines.motion.controls import Controls
from vivify.engines.motion.driver import MotionDriver
from vivify.engines.motion.vector import clip_motion, emotion_offset
from vivify.engines.provenance.disclosure import DisclosureConfig
from vivify.engines.provenance.stamp import ProvenanceStamp
from vivify.engines.render.renderer import Renderer
from vivify.streamer.offline.video_writer import Mp4Writer

CHUNK_SECONDS = 1.0
DRIVERS = ("baseline", "learned")  # learned = vivify.engines.motion.generator (docs/generator.md)


@dataclass(frozen=True)
class RenderOptions:
    """What ``vivify render`` was asked for; validated once."""

    fps: int = 25
    size: int = DEFAULT_SIZE
    full_frame: bool = False
    driver: str = "learned"  # the distilled generator (docs/generator.md), or "baseline"
    emotion: str = "neutral"
    intensity: float = 1.0
    seed: int = 0
    label: str | None = None  # visible disclosure text, e.g. "AI-generated"; None = no label

    def __post_init__(self) -> None:
        if self.fps != 25:
            raise ValueError("fps: only 25 is supported (the motion contract runs at 25 fps)")
        if self.driver not in DRIVERS:
            raise ValueError(f"driver: choose one of {', '.join(DRIVERS)}, got {self.driver!r}")
        emotion_offset(self.emotion, self.intensity)  # raises ValueError on bad values
        if self.label is not None:
            DisclosureConfig(text=self.label)  # raises ValueError on empty/long/multi-line text


@dataclass(frozen=True)
class RenderReport:
    output: Path
    frames: int
    audio_seconds: float
    wall_seconds: float
    width: int
    height: int
    watermark_session: str = ""  # the 32-bit session hash the invisible mark carries (hex)

    @property
    def realtime_factor(self) -> float:
        """How many seconds of video per second of wall time (> 1 is faster than real time)."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else float("inf")


def render_file(
    portrait: str | Path,
    audio: str | Path,
    output: str | Path,
    options: RenderOptions | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    preparer: AvatarPreparer | None = None,
) -> RenderReport:
    """Render ``audio`` spoken by ``portrait`` into ``output``; ``progress(frames, total)``."""
    opts = options or RenderOptions()
    t0 = time.perf_counter()
    pack = (preparer or AvatarPreparer()).prepare(portrait, size=opts.size)
    renderer = Renderer(pack)
    driver: MotionDriver
    if opts.driver == "learned":
        from vivify.engines.motion.generator import GeneratorRunner, MotionGenerator

        driver = MotionGenerator(GeneratorRunner(), seed=opts.seed)
    else:
        driver = BaselineDriver(BaselineConfig(seed=opts.seed))
    driver.set_controls(Controls(emotion=opts.emotion, intensity=opts.intensity))
    duration = probe_duration(audio)
    total = round(duration * opts.fps) if duration else None
    height, width = (pack.full.shape[:2] if opts.full_frame else (opts.size, opts.size))
    # Every frame is stamped: the invisible mark always, the visible label when asked for.
    stamp = ProvenanceStamp(f"render-{uuid.uuid4().hex}",
                            DisclosureConfig(text=opts.label) if opts.label else None)
    metadata = {
        "comment": "AI-generated talking-head video made by Vivify from one portrait and audio",
        "encoder": "vivify",
        "title": f"vivify render ({opts.driver} driver)",
        "ai_generated": "true",
        "generator": f"vivify {_version()} ({opts.driver} motion driver, {pack.rig_version})",
        "watermark": f"vivify invisible mark, session {stamp.info.session_hash} "
                     "(check with: vivify verify FILE)",
        "disclosure_label": opts.label or "none",
    }
    frames = 0
    samples = 0

    def emit(motions: np.ndarray) -> None:
        nonlocal frames
        for m in motions:
            crop = renderer.render(clip_motion(m)).image
            image = renderer.paste_back(crop) if opts.full_frame else crop
            writer.write_frame(stamp.apply(image, inplace=True))
            frames += 1
        if progress is not None and len(motions):
            progress(frames, total)

    with Mp4Writer(output, fps=opts.fps, width=width, height=height, audio_rate=SAMPLE_RATE,
                   metadata=metadata) as writer:
        for chunk in iter_audio(audio, chunk_samples=int(CHUNK_SECONDS * SAMPLE_RATE)):
            samples += len(chunk)
            writer.write_audio(chunk)
            emit(driver.push(chunk))
        emit(driver.flush())
    return RenderReport(output=Path(output), frames=frames, audio_seconds=samples / SAMPLE_RATE,
                        wall_seconds=time.perf_counter() - t0, width=width, height=height,
                        watermark_session=stamp.info.session_hash)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vivify")
    except PackageNotFoundError:
        return "dev"
