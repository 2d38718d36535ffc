"""Browser-side figures for the client (issue 5): click → first frame, and 30 s of call mode.

Starts `vivify serve` on a free loopback port (bench/harness/server.py), drives Debian's Chromium
with Playwright and a generated espeak-ng wav as the fake microphone, and reads the browser's
own getStats().
Writes bench/results/browser-<time>.json and prints a summary.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as ``python bench/browser.py``: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.server import LiveServer

CALL_SECONDS = 30
STARTS = 5
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required"]


def main() -> None:
    from playwright.sync_api import sync_playwright

    from vivify.engines.audio.espeak import speak

    tmp = Path(tempfile.mkdtemp())
    # espeak-ng's own default voice and speed, as this benchmark always used.
    audio = speak("Hello there! Peter bought a big bottle of milk today, and then he sang "
                  "about the sea.", voice="en", speed=175)
    mic = tmp / "mic.wav"
    import wave
    with wave.open(str(mic), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        pcm = np.concatenate([np.zeros(16000, np.float32), audio])
        w.writeframes((np.clip(pcm, -1, 1) * 32767).astype(np.int16).tobytes())
    server = LiveServer(tmp / "home", ["--max-sessions", "4"])
    url = f"{server.url}/"
    try:
        server.start()
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                  args=[*ARGS, f"--use-file-for-fake-audio-capture={mic}"])
            page = b.new_page()
            page.goto(url)
            page.wait_for_selector("#avatars button")
            starts = []
            for i in range(STARTS):
                print(f"start {i + 1}/{STARTS}", flush=True)
                t0 = time.perf_counter()
                page.click("#start-call")
                page.wait_for_function("document.getElementById('video').videoWidth > 0",
                                       timeout=20000)
                starts.append((time.perf_counter() - t0) * 1000)
                page.click("#stop")
                page.wait_for_function("!document.getElementById('video').srcObject")
                time.sleep(0.5)
            page.click("#start-call")
            page.wait_for_function("document.getElementById('video').videoWidth > 0")
            samples = []
            for s in range(CALL_SECONDS):
                time.sleep(1.0)
                samples.append(page.evaluate("window.vivifyStats"))
                print(f"call {s + 1}/{CALL_SECONDS} s", end="\r", flush=True)
            page.click("#stop")
            b.close()
    finally:
        server.stop(timeout=20)
    fps = [s["fps"] for s in samples[3:] if s and s.get("fps") is not None]
    jb = [s["jitterBufferMs"] for s in samples[3:] if s and s.get("jitterBufferMs") is not None]
    srv = [s["serverLatencyMs"] for s in samples[3:] if s and s.get("serverLatencyMs")]
    report = {
        "machine": platform.node(), "cpu": platform.machine(), "cores": os.cpu_count(),
        "chromium": subprocess.run(["chromium", "--version"], capture_output=True,
                                   text=True).stdout.strip(),
        "click_to_first_frame_ms": {"median": round(statistics.median(starts)),
                                    "all": [round(x) for x in starts]},
        "call_seconds": CALL_SECONDS,
        "delivered_fps": {"mean": round(statistics.mean(fps), 2), "min": min(fps)},
        "jitter_buffer_ms": {"median": round(statistics.median(jb), 1),
                             "p95": round(float(np.percentile(jb, 95)), 1)},
        "server_latency_ms_p50": round(statistics.median(srv), 1) if srv else None,
    }
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"browser-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
