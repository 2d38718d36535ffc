"""``vivify``: the command line. Each subcommand is a thin shell over engines/ and streamer/."""

from __future__ import annotations

import os

# Parallelism comes from sessions on worker threads; a BLAS thread pool per matmul would only
# fight them (measured: the renderer's small matmul got slower, not faster). Set before NumPy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

from vivify.engines.avatar.default_avatar import default_portrait_path, resolve_portrait
from vivify.engines.errors import AvatarInputError
from vivify.engines.runtimes.errors import GraphUnavailableError, MissingRuntimeError
from vivify.export.cli_export import add_export_parser
from vivify.streamer.cli.talk import add_talk_parser
from vivify.streamer.offline.verify import add_verify_parser

DEMO_SENTENCE = (
    "Hello! I am a portrait brought to life by Vivify. "
    "Every frame you see is made from one photo and this voice."
)


def _cmd_render(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vivify.streamer.offline.render import RenderOptions, render_file

    opts = RenderOptions(fps=args.fps, size=args.size, full_frame=args.full_frame,
                         driver=args.driver, emotion=args.emotion, intensity=args.intensity,
                         seed=args.seed, label=args.label)
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


def _cmd_prepare(args: argparse.Namespace) -> int:
    from vivify.engines.avatar.pack import AvatarPreparer, avatars_dir

    pack = AvatarPreparer().prepare(resolve_portrait(args.portrait), size=args.size,
                                    use_cache=not args.no_cache)
    info = dict(pack.meta, key=pack.key, cache=str(avatars_dir() / pack.key))
    print(json.dumps(info, indent=2))
    return 0


def _cmd_fetch_models(args: argparse.Namespace) -> int:
    from vivify.engines.avatar.model_store import fetch_models

    where = fetch_models(wheel=args.wheel)
    print(f"face models ready in {where}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """``make run``'s main job until the server lands: speak a sentence, render it."""
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    wav = out.with_suffix(".wav")
    try:
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), DEMO_SENTENCE],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"espeak-ng is needed for the demo voice (make setup installs it): {exc}",
              file=sys.stderr)
        return 1
    args.portrait, args.audio = str(default_portrait_path()), str(wav)
    code = _cmd_render(args)
    print(f"demo video: {out.resolve()}")
    return code


def _cmd_serve(args: argparse.Namespace) -> int:
    from vivify.streamer.server.config import ServerConfig
    from vivify.streamer.server.serve import serve

    config = ServerConfig.from_env(
        host=args.host, port=args.port, token=args.token,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        cors_origins=tuple(args.cors) if args.cors else None,
        ice_servers=tuple(args.ice_server) if args.ice_server else None,
        max_sessions=args.max_sessions, workers=args.workers,
        disclosure_label=args.label, label_text=args.label_text, driver=args.driver,
        runtime=args.runtime, renderer=args.renderer,
        renderer_model=Path(args.renderer_model) if args.renderer_model else None,
        renderer_runtime=args.renderer_runtime, session_idle_timeout=args.idle_timeout)
    return serve(config)


def _cmd_livekit_worker(args: argparse.Namespace) -> int:
    """Be a LiveKit agent's avatar: join its room here, or have a running server join it."""
    import asyncio

    from vivify.streamer.integrations.livekit_worker import (
        ask_server,
        require_livekit,
        run_standalone,
    )

    if not args.url or not args.token:
        print("vivify: --url and --token are needed (or LIVEKIT_URL and LIVEKIT_AVATAR_TOKEN)",
              file=sys.stderr)
        return 2
    if args.server:  # plain HTTP: no LiveKit packages needed in this process
        try:
            answer = ask_server(args.server, args.server_token, args.url, args.token, args.avatar)
        except ConnectionError as exc:
            print(f"vivify: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(answer, indent=2))
        return 0
    try:
        require_livekit()
    except ImportError as exc:
        print(f"vivify: {exc}", file=sys.stderr)
        return 2
    from vivify.streamer.server.config import ServerConfig

    config = ServerConfig.from_env(max_sessions=1, session_idle_timeout=0, driver=args.driver)
    try:
        reason = asyncio.run(run_standalone(args.url, args.token, args.avatar, config))
    except ConnectionError as exc:
        print(f"vivify: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    print(f"avatar session ended: {reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vivify", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def render_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--fps", type=int, default=25, help="frames per second (25)")
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

    p = sub.add_parser("render", help="render a talking-head video from a portrait and audio")
    p.add_argument("--portrait", required=True, help="image file, or 'default'")
    p.add_argument("--audio", required=True, help="any audio (or video) file ffmpeg reads")
    p.add_argument("-o", "--output", required=True, help="output .mp4")
    render_flags(p)
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser("prepare", help="prepare (and cache) an avatar from a portrait")
    p.add_argument("portrait", help="image file, or 'default'")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--no-cache", action="store_true")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("fetch-models", help="fetch the face model files (setup step)")
    p.add_argument("--wheel", type=Path, default=None, help="use this mediapipe wheel file")
    p.set_defaults(func=_cmd_fetch_models)

    p = sub.add_parser("serve", help="run the streaming server (HTTP, WebSocket, WebRTC)")
    p.add_argument("--host", default=None, help="bind address (VIVIFY_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (VIVIFY_PORT, 8080)")
    p.add_argument("--token", default=None, help="require this bearer token (VIVIFY_TOKEN)")
    p.add_argument("--tls-cert", default=None, help="TLS certificate (VIVIFY_TLS_CERT)")
    p.add_argument("--tls-key", default=None, help="TLS private key (VIVIFY_TLS_KEY)")
    p.add_argument("--cors", action="append", help="allowed CORS origin (repeatable)")
    p.add_argument("--ice-server", action="append", metavar="URL",
                   help="STUN/TURN server for WebRTC, e.g. stun:stun.example.org:3478 "
                        "(repeatable; VIVIFY_ICE_SERVERS; none: host candidates only)")
    p.add_argument("--idle-timeout", type=float, default=None, metavar="SECONDS",
                   help="end a session after this long unattended: no viewer, peer, audio or "
                        "message (VIVIFY_IDLE_TIMEOUT, 300; 0 = never)")
    p.add_argument("--max-sessions", type=int, default=None,
                   help="admission limit; 0 measures it at start (VIVIFY_MAX_SESSIONS)")
    p.add_argument("--workers", type=int, default=None, help="inference threads (cores)")
    p.add_argument("--label", choices=("client", "always", "never"), default=None,
                   help="visible AI-generated label on streams: each session decides (client, "
                        "the default; on unless a session asks otherwise), always, or never "
                        "(VIVIFY_LABEL). The invisible watermark is always on")
    p.add_argument("--label-text", default=None, help="label text (VIVIFY_LABEL_TEXT)")
    p.add_argument("--driver", choices=("baseline", "learned"), default=None,
                   help="motion driver (VIVIFY_DRIVER, baseline); learned = the ONNX generator, "
                        "its windows batched across sessions")
    p.add_argument("--runtime", default=None,
                   help="learned driver's engine (VIVIFY_RUNTIME): auto (best present, logged), "
                        "ort-cpu, ort-cuda, ort-tensorrt, tensorrt or torch-cuda")
    p.add_argument("--renderer", choices=("cpu", "graph"), default=None,
                   help="renderer (VIVIFY_RENDERER, cpu): cpu = the numpy renderer per session; "
                        "graph = the exported renderer graph, all sessions' frames batched into "
                        "one call (for GPU runtimes; run `vivify export` first)")
    p.add_argument("--renderer-model", default=None,
                   help="the graph's manifest (VIVIFY_RENDERER_MODEL, "
                        "artifacts/engines/renderer.json)")
    p.add_argument("--renderer-runtime", default=None,
                   help="the graph's engine (VIVIFY_RENDERER_RUNTIME), as --runtime")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("demo", help="render a demo clip of the default avatar")
    p.add_argument("-o", "--output", default="out/demo.mp4")
    render_flags(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("livekit-worker",
                       help="be a LiveKit agent's avatar: join its room, publish face and voice")
    p.add_argument("--url", default=os.environ.get("LIVEKIT_URL"),
                   help="the LiveKit server, wss://… (LIVEKIT_URL)")
    p.add_argument("--token", default=os.environ.get("LIVEKIT_AVATAR_TOKEN"),
                   help="the avatar participant's token, minted by the agent with "
                        "lk.publish_on_behalf (LIVEKIT_AVATAR_TOKEN)")
    p.add_argument("--avatar", default="default", help="avatar id (default)")
    p.add_argument("--server", default=None, metavar="URL",
                   help="have this running `vivify serve` join instead (its engines, batched "
                        "with its other sessions); without it the engines run here")
    p.add_argument("--server-token", default=os.environ.get("VIVIFY_TOKEN"),
                   help="that server's bearer token (VIVIFY_TOKEN)")
    p.add_argument("--driver", choices=("baseline", "learned"), default=None,
                   help="motion driver when the engines run here (VIVIFY_DRIVER, baseline)")
    p.set_defaults(func=_cmd_livekit_worker)

    add_talk_parser(sub)
    add_verify_parser(sub)
    add_export_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except AvatarInputError as exc:
        print(f"vivify: portrait rejected ({exc.code}): {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, MissingRuntimeError, GraphUnavailableError) as exc:
        # The last two: a runtime or an exported model that the command was told to use is
        # not here; the message says what to install or run.
        print(f"vivify: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
