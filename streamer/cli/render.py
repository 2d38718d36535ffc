"""``vivify render`` (a portrait and audio → an MP4) and ``vivify demo`` (the default portrait
speaking a sentence in the demo voice)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vivify.engines.avatar.default_avatar import default_portrait_path, resolve_portrait

DEMO_SENTENCE = (
    "Hello! I am a portrait brought to life by Vivify. "
    "Every frame you see is made from one photo and this voice."
)


def _add_render_flags(p: argparse.ArgumentParser) -> None:
    """What render and demo share: the face, the motion and the disclosure."""
    p.add_argument("--size", type=int, default=512, help="face crop side in pixels (512)")
    p.add_argument("--full-frame", action="store_true",
                   help="paste the face back into the whole portrait")
    p.add_argument("--driver", default="learned", choices=("baseline", "learned"),
                   help="motion driver: learned (models/motion_generator.onnx) or baseline")
    p.add_argument("--emotion", default="neutral",
                   help="neutral, happy, sad, surprised or angry")
    p.add_argument("--intensity", type=float, default=1.0, help="emotion intensity 0..1")
    p.add_argument("--seed", type=int, default=0, help="seed for blinks and head motion")
    p.add_argument("--label", nargs="?", const="AI-generated", default=None, metavar="TEXT",
                   help="draw a visible disclosure label (default text: AI-generated); "
                        "the invisible watermark is always there")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--progress", action="store_true", help="progress bar even when piped")


def cmd_render(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vivify.streamer.offline.render import RenderOptions, render_file

    opts = RenderOptions(size=args.size, full_frame=args.full_frame, driver=args.driver,
                         emotion=args.emotion, intensity=args.intensity, seed=args.seed,
                         label=args.label)
    bar = tqdm(unit="frame", disable=args.quiet or (not sys.stderr.isatty() and not args.progress))

    def progress(done: int, total: int | None) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        report = render_file(resolve_portrait(args.portrait), args.audio, args.output, opts,
                             progress=progress)
    finally:
        bar.close()
    print(f"wrote {report.output} ({report.width}×{report.height}, {report.frames} frames, "
          f"{report.audio_seconds:.1f} s of audio) in {report.wall_seconds:.1f} s = "
          f"{report.realtime_factor:.2f}× real time")
    print(f"every frame carries the invisible mark of session {report.watermark_session} "
          f"(check: vivify verify {report.output})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``make demo``: speak a sentence with the demo voice, render the default portrait."""
    from vivify.engines.audio.espeak import (
        DEFAULT_SPEED,
        DEFAULT_VOICE,
        VoiceFailed,
        VoiceUnavailable,
        speak_to_wav,
    )

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        wav = speak_to_wav(DEMO_SENTENCE, out.with_suffix(".wav"), DEFAULT_VOICE, DEFAULT_SPEED)
    except (VoiceUnavailable, VoiceFailed) as exc:
        print(f"vivify: the demo voice needs espeak-ng (make setup installs it): {exc}",
              file=sys.stderr)
        return 1
    args.portrait, args.audio = str(default_portrait_path()), str(wav)
    code = cmd_render(args)
    print(f"demo video: {out.resolve()}")
    return code


def add_render_parsers(sub: Any) -> None:
    """Register ``render`` and ``demo`` on the ``vivify`` subparsers."""
    p = sub.add_parser("render", help="render a talking-head video from a portrait and audio")
    p.add_argument("--portrait", required=True, help="image file, or 'default'")
    p.add_argument("--audio", required=True, help="any audio (or video) file ffmpeg reads")
    p.add_argument("-o", "--output", required=True, help="output .mp4")
    _add_render_flags(p)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("demo", help="render a demo clip of the default avatar")
    p.add_argument("-o", "--output", default="out/demo.mp4")
    _add_render_flags(p)
    p.set_defaults(func=cmd_demo)
