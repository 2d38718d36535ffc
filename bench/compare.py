"""A/B comparison of two versions on one noisy machine: ``make bench-compare A=<sha> B=<sha>``.

Each version is checked out into its own git worktree; this checkout's ``bench/stages.py --quick``
then runs against each worktree's code (``PYTHONPATH``), alternating A, B, A, B, … so that the
machine's drift hits both alike. The report is the ratio B/A of the medians over the rounds:
below 1 means B is faster. Writes ``bench/results/compare-<A>-<B>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRICS = {  # name → (path into the stages JSON, lower is better)
    "audio features per frame (ms)": (("stages", "audio_features", "per_frame", "median_ms"),
                                      True),
    "baseline driver per frame (ms)": (("stages", "baseline_driver", "per_frame", "median_ms"),
                                       True),
    "generator per window, b=1 (ms)": (("stages", "motion_generator", "runtimes",
                                        "ort-cpu", "1", "per_window_ms"), True),
    "generator per window, b=16 (ms)": (("stages", "motion_generator", "runtimes",
                                         "ort-cpu", "16", "per_window_ms"), True),
    "render per frame, best of 3 (ms)": (("stages", "renderer", "per_frame_best_of_3",
                                          "median_ms"), True),
    "render, all layers (ms)": (("stages", "renderer", "all_layers", "median_ms"), True),
    "paste-back 720p (ms)": (("stages", "paste_back", "frame_720p", "median_ms"), True),
    "encode VP8 (ms)": (("stages", "encode_vp8", "per_frame", "median_ms"), True),
    "encode H.264 (ms)": (("stages", "encode_h264", "per_frame", "median_ms"), True),
    "prepare 512² (s)": (("stages", "prepare", "prepare_512_s"), True),
    "offline render (× real time)": (("stages", "offline_render", "x_realtime"), False),
}


def _sha(rev: str) -> str:
    return subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


def _worktree(sha: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"vivify-bench-{sha}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), sha], cwd=ROOT,
                       check=True, capture_output=True)
    return path


def _get(data: dict[str, object], keys: tuple[str, ...]) -> float | None:
    cur: object = data
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return float(cur) if isinstance(cur, int | float) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    shas = [_sha(args.a), _sha(args.b)]
    trees = {sha: _worktree(sha) for sha in shas}
    runs: dict[str, list[dict[str, object]]] = {sha: [] for sha in shas}
    for r in range(args.rounds):
        order = shas if r % 2 == 0 else shas[::-1]
        for sha in order:
            print(f"round {r + 1}/{args.rounds}: {sha}", flush=True)
            out = Path(tempfile.mkstemp(suffix=".json")[1])
            env = dict(os.environ, PYTHONPATH=str(trees[sha]), OMP_NUM_THREADS="1",
                       OPENBLAS_NUM_THREADS="1")
            proc = subprocess.run([sys.executable, str(ROOT / "bench" / "stages.py"), "--quick",
                                   "--out", str(out)], cwd=trees[sha], env=env,
                                  capture_output=True, text=True)
            # A stage the older version lacks fails alone; the others still count.
            try:
                data = json.loads(out.read_text())
            except ValueError:
                print(f"  {sha} failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            if data.get("failed"):
                print(f"  {sha}: stages failed: {', '.join(data['failed'])}", flush=True)
            runs[sha].append(data)
    rows = []
    print(f"\n{'metric':36s} {shas[0]:>10s} {shas[1]:>10s}   B/A")
    for name, (keys, _lower_better) in METRICS.items():
        vals = [[v for r in runs[s] if (v := _get(r, keys)) is not None] for s in shas]
        if not all(vals):
            continue
        a, b = statistics.median(vals[0]), statistics.median(vals[1])
        rows.append({"metric": name, "a": a, "b": b, "ratio": b / a if a else None})
        print(f"{name:36s} {a:10.3f} {b:10.3f}   {b / a:5.2f}")
    result = {"a": shas[0], "b": shas[1], "rounds": args.rounds, "rows": rows, "runs": runs}
    path = ROOT / "bench" / "results" / f"compare-{shas[0]}-{shas[1]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"written to {path}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
