"""``python -m bench.harness.lifted_serve serve …``: ``vivify serve`` whose admission limit is
lifted once it has measured its own, so a capacity ramp can go past the server's estimate.

With ``--max-sessions 0`` the server measures at start how many sessions it can run in real
time. The loopback benchmark records that estimate next to the ramp it measures itself, so
here the measurement runs as usual, its result goes to ``$VIVIFY_HOME/capacity.json`` (with
the worker count), and the limit becomes ``$VIVIFY_BENCH_LIFT_TO`` (default 32) instead. Every
other part of the server is the operator's ``vivify serve``; only this one function is wrapped.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

INFO_FILE = "capacity.json"
LIFT_ENV = "VIVIFY_BENCH_LIFT_TO"


def read_info(home: Path) -> dict[str, Any]:
    """What the server wrote at start: ``capacity_measured`` and ``workers`` ({} if nothing)."""
    try:
        info: dict[str, Any] = json.loads((home / INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return info


def main(argv: list[str] | None = None) -> int:
    from vivify.streamer.cli.main import main as cli
    from vivify.streamer.server import serve as serve_module

    home = Path(os.environ["VIVIFY_HOME"])
    lift_to = int(os.environ.get(LIFT_ENV, "32"))
    measure = serve_module.measure_capacity

    def measure_then_lift(store: Any, workers: int, renderer: Any, graph: Any = None) -> int:
        measured = measure(store, workers, renderer, graph)
        (home / INFO_FILE).write_text(json.dumps({"capacity_measured": measured,
                                                  "workers": workers}))
        return lift_to

    serve_module.measure_capacity = measure_then_lift
    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
