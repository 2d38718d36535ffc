"""What a benchmark's numbers depend on: host, CPU, GPU, runtimes, library versions, git sha.

Recorded in every ``make bench`` result so two runs are never compared without knowing they
came from different machines. GPUs and accelerated runtimes are *detected* (``nvidia-smi``,
ONNX Runtime's provider list), never assumed: on the development VM both are absent and the
report says "none".
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("numpy", "onnxruntime", "onnxruntime-gpu", "aiortc", "av", "opencv-python-headless",
            "ai-edge-litert", "fastapi", "uvicorn", "websockets", "httpx", "matplotlib")
# Recorded: BLAS threading changes the server's CPU per session 3× (docs/benchmarks.md).
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "OPENCV_FOR_THREADS_NUM")
# The providers that mean "an accelerator runs the generator" (ONNX Runtime names).
ACCELERATED = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (``platform.processor()`` is often empty)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def gpus() -> list[dict[str, str]]:
    """NVIDIA GPUs as ``nvidia-smi`` lists them; empty when there is none (or no driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            rows.append({"name": parts[0], "memory": parts[1], "driver": parts[2]})
    return rows


def ort_providers() -> list[str]:
    """ONNX Runtime's execution providers in this environment ([] without onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in PACKAGES:
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def git_sha() -> str | None:
    """The checked-out commit and whether the tree has local changes (``<sha>+dirty``)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty.strip() else "")


def machine_info() -> dict[str, Any]:
    """Everything above plus memory, load and the thread environment, as one JSON object."""
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    gpu = gpus()
    providers = ort_providers()
    return {"host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)), "memory_gib": mem_gib,
            "gpu": gpu or None, "ort_providers": providers,
            "accelerated_runtimes": [p for p in ACCELERATED if p in providers],
            "os": platform.platform(), "python": sys.version.split()[0],
            "versions": versions(), "git": git_sha(),
            "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
            "thread_env": {k: os.environ.get(k) for k in THREAD_ENV},
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
