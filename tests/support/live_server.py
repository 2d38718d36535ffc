"""A real server for end-to-end tests: ``vivify serve``'s app on uvicorn, on a loopback port.

In this process (a thread), so a test can reach inside (``server.manager.sessions``) while
clients talk to it over real HTTP, WebSocket and WebRTC. The engines are the real ones; the
face models must be in the cache (depend on the ``face_models`` fixture first).

A test about the process itself (signals, exit codes, the log) starts the command an operator
runs instead, through the benchmarks' launcher: :class:`bench.harness.server.LiveServer`
(a child process with a private home, ready on ``/healthz``). This one is its in-process
twin: the same port picking (:func:`bench.harness.server.free_port`), no process in between.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import uvicorn

from tests.support.net import free_port
from tests.support.waiting import wait_until
from vivify.streamer.server.config import ServerConfig, default_of
from vivify.streamer.server.serve import build

TOKEN = "s3cret"  # the bearer token of the token-protected test server (``server`` fixture)
START_TIMEOUT_S = 60.0  # the first start loads the models: generous, a stuck-start bound
STOP_TIMEOUT_S = 15.0
MAX_UPLOAD_BYTES = 2 * 2**20  # small: the upload tests cross it with small files


class LiveServer:
    """``with LiveServer(home, token) as server:`` — ``server.url``, ``server.headers`` (the
    bearer token, if any), ``server.manager`` (the :class:`SessionManager`), ``server.app``.

    ``config_overrides`` go to :class:`ServerConfig` (``session_idle_timeout=0``...); the
    driver is the product's default (the learned generator) unless one is given.
    """

    def __init__(self, home: Path, token: str | None, max_sessions: int = 4,
                 driver: str = default_of("driver"), **config_overrides: Any) -> None:
        self.port = free_port()
        self.token = token
        config = ServerConfig(port=self.port, token=token, max_sessions=max_sessions,
                              max_upload_bytes=MAX_UPLOAD_BYTES, driver=driver,
                              **config_overrides)
        self.app, self.manager = build(config, home=home)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"authorization": f"Bearer {token}"} if token else {}

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), START_TIMEOUT_S,
                   "the server to start")
        if not self.server.started:
            raise RuntimeError("the server did not start (its thread ended)")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=STOP_TIMEOUT_S)
