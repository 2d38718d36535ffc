"""One Vivify node: a Ray actor that runs a real ``vivify serve`` in a child process.

Why a child process and not uvicorn inside the actor: ``vivify serve`` owns its process (signal
handlers for the drain, heap limits, ``gc.freeze``, one event loop whose thread is the
bottleneck: docs/benchmarks.md), and a node that dies must take exactly its sessions with it.
The child is started with ``PR_SET_PDEATHSIG``, so when Ray kills the actor (node loss, ``ray
kill``, the machine's raylet going away) the server dies with it, and :meth:`VivifyNode.watch`
returns when the server dies by itself, so the ingress hears of either at once.

The server is configured the documented way, by ``VIVIFY_*`` variables (docs/api.md): the same
settings table as ``vivify serve``'s flags, so any server setting can be given to every node.
The node's actor declares its resources (``num_cpus=1`` per node on CPU hosts, ``num_gpus=1``
on GPU hosts: :func:`node_options`), so Ray places one node per core or per GPU, on whichever
machine of the Ray cluster has one free.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vivify.streamer.net import free_port, wait_ready

# The same code path as `vivify serve` (ServerConfig from VIVIFY_* → serve()), without the
# argparse front end, so a node needs nothing but the server package.
SERVE = ("from vivify.streamer.server.config import ServerConfig;"
         "from vivify.streamer.server.serve import serve;"
         "raise SystemExit(serve(ServerConfig.from_env()))")
PR_SET_PDEATHSIG = 1
READY_POLL_S = 0.1


@dataclass(frozen=True)
class NodeSpec:
    """How to start one node's server."""

    name: str
    token: str  # the nodes' own bearer token (the ingress holds it; clients never see it)
    env: dict[str, str] = field(default_factory=dict)  # VIVIFY_* settings for the server
    host: str = "127.0.0.1"  # where the server listens; 0.0.0.0 on a multi-machine cluster
    start_timeout_s: float = 180.0  # imports + default avatar + capacity probe
    log_dir: str | None = None  # the server's log goes here (default: the temp folder)


def node_options(gpus: bool) -> dict[str, Any]:
    """The actor's resources: one GPU per node on GPU hosts, else one core."""
    resources: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
    # max_concurrency: watch() blocks for the node's whole life beside health() and stop().
    return dict(resources, max_concurrency=4, max_restarts=0)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the actor's process dies (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def advertised_host(bind: str) -> str:
    """The address the ingress reaches this node at: the bind address, or for 0.0.0.0 this
    machine's address in the Ray cluster."""
    if bind not in ("0.0.0.0", "::", ""):
        return bind
    try:
        import ray

        return str(ray.util.get_node_ip_address())
    except Exception:
        return socket.gethostbyname(socket.gethostname())


class VivifyNode:
    """The actor's class (wrapped with ``ray.remote`` by the ingress, not at import, so this
    module imports without Ray). Its methods are what the ingress calls."""

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.port = free_port(spec.host if spec.host not in ("0.0.0.0", "::") else "")
        self.url = f"http://{advertised_host(spec.host)}:{self.port}"
        self._local = f"http://127.0.0.1:{self.port}" if spec.host in (
            "127.0.0.1", "0.0.0.0", "localhost") else self.url
        logs = Path(spec.log_dir or tempfile.gettempdir())
        self.log_path = logs / f"vivify-node-{spec.name}-{self.port}.log"
        env = dict(os.environ, **spec.env, VIVIFY_HOST=spec.host, VIVIFY_PORT=str(self.port),
                   VIVIFY_TOKEN=spec.token)
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-c", SERVE], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)

    # ------------------------------------------------------------------ for the ingress
    def start(self) -> dict[str, Any]:
        """Wait until the server answers ``/healthz``; its URL, pid and first health."""
        def health() -> dict[str, Any] | None:
            with contextlib.suppress(OSError, ValueError):
                return self.health(timeout=1.0)
            return None

        first = wait_ready(self.proc, health, self.spec.start_timeout_s, READY_POLL_S)
        if first is not None:
            return {"name": self.spec.name, "url": self.url, "pid": self.proc.pid,
                    "log": str(self.log_path), "health": first}
        if self.proc.poll() is not None:
            raise RuntimeError(f"node {self.spec.name}: vivify serve exited with "
                               f"{self.proc.returncode}: {self.log_tail()}")
        self.stop()
        raise RuntimeError(f"node {self.spec.name}: not ready in {self.spec.start_timeout_s:.0f}"
                           f" s: {self.log_tail()}")

    def health(self, timeout: float = 2.0) -> dict[str, Any]:
        """The server's ``/healthz`` (capacity, sessions...)."""
        with urllib.request.urlopen(self._local + "/healthz", timeout=timeout) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data

    def pid(self) -> int:
        """The server process's id (what ``bench/cluster.py`` kills to test node loss)."""
        return int(self.proc.pid)

    def watch(self) -> int:
        """Block until the server exits; its exit status. (The ingress keeps one call of this
        in flight per node: it returns when the server dies, and fails when the actor does.)"""
        return int(self.proc.wait())

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (the server's drain: its sessions get ``session_closed``), then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            self._log.close()
        return self.proc.returncode

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""
