"""One live ``vivify serve`` for the benchmarks and the tests: a child process on a free
loopback port with its own ``VIVIFY_HOME``, ready when ``/healthz`` answers.

It is started the way an operator starts it, ``python -m vivify.streamer.cli serve`` (its own
process and GIL, as in production; ``time.monotonic`` is system-wide on Linux, so a client can
compare its times with the server's log). The home is private (a fresh avatar store and log)
and its ``models`` links to the face models already on this machine, so nothing is downloaded.
stdout and stderr go to ``home/server.log``, appended across restarts (a check for secrets in
the log then reads all of it). ``VIVIFY_TOKEN`` from the environment is dropped unless a
``token`` is given: the server is open exactly when the caller says so.

::

    with LiveServer(Path(tmp), args=["--max-sessions", "3"]) as server:
        httpx.get(server.url + "/healthz")
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.harness.procfs import rss_mib
from vivify.streamer.net import free_port, wait_ready

REPO = Path(__file__).resolve().parents[2]
HEALTH = "/healthz"


class LiveServer:
    """``python -m <module> serve --port P [--token T] <args>`` as a child process.

    ``module``: ``vivify.streamer.cli`` (the operator's command) or a wrapper taking the same
    arguments (:mod:`bench.harness.lifted_serve`). ``optional_flags``: flags dropped, and
    recorded in :attr:`dropped_flags`, when this server rejects them, so an older server is
    still probed. ``models``: the face models' folder linked into the home (default: this
    process's ``default_cache_dir()``). ``env``: extra environment for the child.
    """

    def __init__(self, home: Path, args: Sequence[str] = (), token: str | None = None, *,
                 module: str = "vivify.streamer.cli", optional_flags: Sequence[str] = (),
                 models: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.flags = list(args)
        self.token = token
        self.module = module
        self.optional_flags = tuple(optional_flags)
        self.models = models
        self.env = dict(env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "server.log"
        self.dropped_flags: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.info: dict[str, Any] = {}

    # ------------------------------------------------------------------ starting
    def command(self) -> list[str]:
        token = ["--token", self.token] if self.token else []
        return [sys.executable, "-m", self.module, "serve", "--port", str(self.port), *token,
                *self.flags]

    def redacted_command(self) -> list[str]:
        """:meth:`command` fit for a report: the token replaced by ``<TOKEN>``."""
        if not self.token:
            return self.command()
        return [a.replace(self.token, "<TOKEN>") for a in self.command()]

    def _link_models(self) -> None:
        link = self.home / "models"
        if link.exists() or link.is_symlink():
            return
        from vivify.engines.avatar.model_store import default_cache_dir

        link.symlink_to((self.models or default_cache_dir()).resolve())

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ, VIVIFY_HOME=str(self.home), PYTHONUNBUFFERED="1", **self.env)
        if not self.token:
            env.pop("VIVIFY_TOKEN", None)
        return env

    def start(self, timeout: float = 120.0) -> dict[str, Any]:
        """Start the child and wait until ``/healthz`` answers 200; its answer, with
        ``start_s``, the seconds that took. A rejected optional flag is dropped and the start
        retried; a child that exits or stays silent is killed and a RuntimeError raised with
        its log."""
        self.home.mkdir(parents=True, exist_ok=True)
        self._link_models()
        while True:
            t0 = time.monotonic()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self.command(), cwd=REPO, stdout=log,
                                             stderr=subprocess.STDOUT, env=self._environment())
            self.starts += 1
            health = self._wait_ready(timeout)
            if health is not None:
                self.info = dict(health, start_s=round(time.monotonic() - t0, 2))
                return self.info
            text = self.log_text()[offset:]
            if self.proc.poll() is not None and self._drop_rejected_flag(text):
                continue
            self.kill()
            raise RuntimeError(f"server did not start: {text[-2000:]}")

    def _drop_rejected_flag(self, log: str) -> bool:
        if "unrecognized arguments" not in log:
            return False
        for flag in self.optional_flags:
            if flag in self.flags and flag in log:
                i = self.flags.index(flag)
                self.dropped_flags += self.flags[i:i + 2]
                del self.flags[i:i + 2]
                return True
        return False

    def _wait_ready(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc is not None
        with httpx.Client(timeout=1.0, trust_env=False) as c:
            def health() -> dict[str, Any] | None:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    r = c.get(self.url + HEALTH)
                    if r.status_code == 200:
                        answer: dict[str, Any] = r.json()
                        return answer
                return None

            return wait_ready(self.proc, health, timeout)

    # ------------------------------------------------------------------ while it runs
    @property
    def pid(self) -> int:
        assert self.proc is not None, "the server was not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> float | None:
        """The server's RSS in MiB (None when it is not running)."""
        return rss_mib(self.pid) if self.alive() else None

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def log_tail(self, n: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    # ------------------------------------------------------------------ stopping
    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (the server drains its sessions), SIGKILL after ``timeout``; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """Last resort (a hung or leftover server): SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
