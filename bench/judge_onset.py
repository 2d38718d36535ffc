"""``python -m bench.judge_onset``: speech onset → mouth as the outside judge's caller feels it.

The judge (``../shared/judge/rtc_client.py``) calls ``vivify serve`` over WebRTC in mirror mode
with a wav as its microphone and times the first speech onset to the mouth reaching 30 % of its
range in the video it receives. That is a caller's view: it includes both ends' jitter buffers,
the codec and the face's own rise time, where ``bench/loopback.py`` measures from the server's
first frame showing any motion. This runs the judge's client ``--runs`` times on a live server
(started here, its flags after ``--``), over sentences spoken by espeak-ng training voices, and
with ``--save`` scores every run's received stream with the judge's ``articulation``
(bilabials closed, open vowels opened on the live stream; pooled over the runs in the report;
scored between calls, so it does not load the server during one).

    python -m bench.judge_onset --runs 6 -- --driver learned
    python -m bench.judge_onset --runs 6 --save -- --driver baseline

Output: JSON (``--out``, default ``bench/results/judge-onset-<time>.json``) with every run and
the p50/p95 of onset latency, fps and first-frame times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.machine import machine_info
from bench.harness.server import LiveServer
from vivify.engines.audio import espeak
from vivify.export.video_eval import pooled_rate

REPO = Path(__file__).resolve().parent.parent
JUDGE = REPO.parent / "shared" / "judge"
JUDGE_PYTHON = Path.home() / ".cache" / "vivify-judge" / "venv" / "bin" / "python"
RESULTS = REPO / "bench" / "results"
SENTENCES = (  # real sentences with P/B/M and open vowels; onsets of several kinds
    ("hello there my name is peter and i bought a bottle of milk", "en-us"),
    ("open the window and let the morning air in", "en-gb-x-rp"),
    ("bob and pam are happy to be back home again", "en-us+m3"),
    ("all of my friends came to the party", "en-us+f2"),
    ("today we are going to talk about the weather", "en-gb-x-rp+f1"),
    ("maybe the big brown bear will come back", "en-us+f4"),
)

def judge_python() -> str:
    """The judge's own environment, made by its setup script when missing."""
    if JUDGE_PYTHON.exists():
        return str(JUDGE_PYTHON)
    out = subprocess.run(["bash", str(JUDGE / "setup.sh")], check=True, capture_output=True,
                         text=True)
    return out.stdout.strip().splitlines()[-1]


def call(python: str, url: str, wav: Path, save: Path | None) -> dict[str, Any]:
    """One judge call; its JSON (or the error it printed)."""
    cmd = [python, str(JUDGE / "rtc_client.py"), url, str(wav), "--seconds", "12"]
    if save is not None:
        cmd += ["--save", str(save)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"error": f"rtc_client exited {done.returncode}: {done.stderr[-400:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def articulation(python: str, save: Path, text: str) -> dict[str, Any]:
    """The judge's articulation scores of a saved stream (lips on P/B/M, open vowels)."""
    txt = save.with_suffix(".txt")
    txt.write_text(text + "\n")
    done = subprocess.run([python, str(JUDGE / "judge.py"), "articulation",
                           str(save) + ".mp4", str(save) + ".wav", str(txt)],
                          capture_output=True, text=True, timeout=300)
    lines = [ln for ln in done.stdout.splitlines() if ln.strip().startswith("{")]
    if not lines:
        return {"error": f"judge exited {done.returncode}: {done.stderr[-400:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def pooled_articulation(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Bilabials closed and open vowels opened over every scored run (each instance once)."""
    scored = [r["articulation"] for r in runs
              if isinstance(r.get("articulation"), dict) and "error" not in r["articulation"]]
    out: dict[str, Any] = {"runs": len(scored)}
    for rate, count in (("bilabial_closed", "bilabials"), ("vowel_opened", "open_vowels")):
        parts = [(a.get(rate), a.get(count, 0)) for a in scored]
        out[count] = sum(n for r, n in parts if r is not None)
        out[rate] = pooled_rate(parts)
    return out


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    server_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=6)
    p.add_argument("--save", action="store_true",
                   help="score each run's received stream with the judge's articulation")
    p.add_argument("--out", type=Path)
    args = p.parse_args(own)
    python = judge_python()
    runs: list[dict[str, Any]] = []
    report: dict[str, Any] = {"machine": machine_info(), "server_args": server_args}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        wavs = []
        for k, (text, voice) in enumerate(SENTENCES):
            wav = tmp / f"s{k}.wav"
            espeak.speak_to_wav(text, wav, voice=voice)
            wavs.append((wav, text))
        with LiveServer(tmp / "home", args=server_args) as server:
            for k in range(args.runs):
                wav, text = wavs[k % len(wavs)]
                save = tmp / f"run{k}" if args.save else None
                result = call(python, server.url, wav, save) | {"sentence": text}
                if save is not None and "error" not in result:
                    result["articulation"] = articulation(python, save, text)
                runs.append(result)
                print(json.dumps(result), flush=True)
    onsets = [r["onset_latency_ms"] for r in runs if "onset_latency_ms" in r]
    report |= {
        "runs": runs,
        "onset_ms_p50": percentile(onsets, 50), "onset_ms_p95": percentile(onsets, 95),
        "fps_min": min((r["fps"] for r in runs if "fps" in r), default=None),
        "first_frame_s_p50": percentile([r["first_frame_s"] for r in runs
                                         if "first_frame_s" in r], 50),
        "failed": sum("error" in r for r in runs),
    }
    if args.save:
        report["articulation"] = pooled_articulation(runs)
    out = args.out or RESULTS / f"judge-onset-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k not in ("runs", "machine")}))
    print(f"report: {out}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
