"""``vivify``: the command line. Each subcommand is a thin shell over engines/ and streamer/.

One module per command (render.py = render + demo, prepare.py = prepare + fetch-models,
serve.py, livekit.py, export.py; talk and verify bring their own parsers); each imports its
heavy dependencies only when it runs, so ``vivify --help`` and a serving install stay light.
"""

from __future__ import annotations

import os

# Parallelism comes from sessions on worker threads; a BLAS thread pool per matmul would only
# fight them (measured: the renderer's small matmul got slower, not faster). Set before NumPy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import logging
import sys

from vivify.engines.errors import AvatarInputError
from vivify.engines.runtimes.errors import GraphUnavailableError, MissingRuntimeError
from vivify.streamer.cli.export import add_export_parser
from vivify.streamer.cli.livekit import add_livekit_parser
from vivify.streamer.cli.prepare import add_prepare_parsers
from vivify.streamer.cli.render import add_render_parsers
from vivify.streamer.cli.serve import add_serve_parser
from vivify.streamer.cli.talk import add_talk_parser
from vivify.streamer.cluster.command import add_cluster_parser
from vivify.streamer.offline.verify import add_verify_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vivify", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    add_render_parsers(sub)  # render, demo
    add_prepare_parsers(sub)  # prepare, fetch-models
    add_serve_parser(sub)
    add_cluster_parser(sub)
    add_livekit_parser(sub)
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
        # A bad setting (ServerConfig says which flag and variable), a missing file, or a
        # runtime or an exported model that the command was told to use is not here; the
        # message says what to install or run.
        print(f"vivify: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
