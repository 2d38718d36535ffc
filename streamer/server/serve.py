"""``vivify serve``: wire the engine, the scheduler and the API together and run uvicorn.

Capacity is measured at start unless configured: render and encode a few frames of the default
avatar, then admit as many sessions as the workers (rendering), the event loop (encoding, RTP)
and the machine's cores (all of it plus the untimed per-session work) can each sustain at
25 fps with 25 % headroom.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI

from vivify.engines.motion.driver import MotionDriver
from vivify.engines.render.graph_renderer import GraphRenderer
from vivify.streamer.media.batcher import WindowBatcher
from vivify.streamer.media.clock import MonotonicClock
from vivify.streamer.media.scheduler import InferenceScheduler
from vivify.streamer.server.app import create_app
from vivify.streamer.server.avatars import AvatarStore
from vivify.streamer.server.config import ServerConfig
from vivify.streamer.server.manager import SessionManager
from vivify.streamer.server.memory import limit_heaps

log = logging.getLogger("vivify")
HEADROOM = 0.75
UNTIMED_S_PER_FRAME = 0.008  # per-session CPU per frame beyond render + encode (make bench)


WS_MAX_MESSAGE = 128 * 1024  # the largest WebSocket message a client may send (PCM ≤ 64 KiB)


class RedactSecrets(logging.Filter):
    """Keep the token out of every log line: uvicorn logs each request path with its query
    string (``/v1/sessions/…/ws?token=…``), and an exception may quote a header."""

    PATTERNS = (re.compile(r"(token=)[^&\s\"']+", re.I),
                re.compile(r"(bearer\s+)[^\s\"',]+", re.I))

    def __init__(self, token: str | None) -> None:
        super().__init__()
        self.token = token

    def redact(self, text: str) -> str:
        for pattern in self.PATTERNS:
            text = pattern.sub(r"\1[redacted]", text)
        if self.token:
            text = text.replace(self.token, "[redacted]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class VivifyServer(uvicorn.Server):
    """uvicorn's server, with the sessions closed *before* uvicorn closes the connections.

    uvicorn's shutdown closes every WebSocket with 1012 first and runs the app's lifespan
    shutdown last, so a client would never hear why its session ended. Closing the sessions
    first sends each socket its ``session_closed`` event, then the 1012
    (streamer/server/routes/websocket.py).
    """

    def __init__(self, config: uvicorn.Config, manager: SessionManager) -> None:
        super().__init__(config)
        self.manager = manager

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        await self.manager.shutdown()
        await asyncio.sleep(0.05)  # the sockets' pumps flush their last event and close
        await super().shutdown(sockets)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: easy to grep, easy to ship."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"t": round(record.created, 3), "level": record.levelname,
                               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def measure_capacity(store: AvatarStore, workers: int, renderer: Any,
                     graph: GraphRenderer | None = None) -> int:
    """Sessions this machine can run in real time (see the module docstring)."""
    import av
    from aiortc.codecs.vpx import Vp8Encoder

    from vivify.engines.motion.vector import motion

    poses = [motion(jaw_open=0.2 * (i % 5), head_yaw=0.1 * (i % 7 - 3)) for i in range(10)]
    frames = [renderer.render(p).image for p in poses]  # warm-up, and frames to encode
    if graph is not None:
        render_s = _graph_frame_seconds(graph, renderer.pack, np.stack(poses))
    else:
        t0 = time.perf_counter()
        for p in poses * 3:
            renderer.render(p)
        render_s = (time.perf_counter() - t0) / (3 * len(poses))
    encoder = Vp8Encoder()  # what aiortc itself uses for VP8
    for f in frames[:3]:
        encoder.encode(av.VideoFrame.from_ndarray(f, format="rgb24"))
    t0 = time.perf_counter()
    for f in frames * 2:
        encoder.encode(av.VideoFrame.from_ndarray(f, format="rgb24"))
    encode_s = (time.perf_counter() - t0) / (2 * len(frames))
    render_workers = 1 if graph is not None else workers  # the graph runs one call at a time
    by_workers = render_workers * HEADROOM / (25 * (render_s + 0.0002))
    by_loop = HEADROOM / (25 * (encode_s + 0.002))  # + ~2 ms of RTP/asyncio work per frame
    # All of it shares the machine's cores, with work the two probes do not time (Opus both
    # ways, SRTP, resampling, the watermark, pacing): measured by `make bench` as ~0.2 cores
    # per session beyond render + encode, i.e. ~8 ms per frame.
    cores = os.cpu_count() or workers
    by_cpu = cores * HEADROOM / (25 * (render_s + encode_s + UNTIMED_S_PER_FRAME))
    cap = max(1, math.floor(min(by_workers, by_loop, by_cpu)))
    log.info("capacity %d sessions (render %.1f ms, VP8 encode %.1f ms per frame)", cap,
             render_s * 1e3, encode_s * 1e3)
    return cap


def _graph_frame_seconds(graph: GraphRenderer, pack: Any, poses: np.ndarray) -> float:
    """The graph renderer's time per frame in a batch of ``len(poses)`` (one call renders
    every session's next frame, so that is what a session costs it)."""
    key = "capacity-probe"
    graph.attach(key, pack)
    try:
        graph.render(poses, [key] * len(poses))  # warm-up (a CUDA graph capture, autotune)
        t0 = time.perf_counter()
        graph.render(poses, [key] * len(poses))
        return (time.perf_counter() - t0) / len(poses)
    finally:
        graph.detach(key)


def _drivers(config: ServerConfig, scheduler: InferenceScheduler
             ) -> tuple[Callable[[], MotionDriver], WindowBatcher | None]:
    """A per-session driver factory, and for the learned generator the shared batcher."""
    if config.driver == "baseline":
        from vivify.engines.motion.baseline import BaselineConfig, BaselineDriver

        return (lambda: BaselineDriver(BaselineConfig(seed=secrets.randbits(31)))), None
    from vivify.engines.motion.generator import GeneratorRunner, MotionGenerator

    # One engine for all sessions; the manifest's sha256 is checked; `auto` logs its choice.
    runner = (GeneratorRunner(config.generator, runtime=config.runtime) if config.generator
              else GeneratorRunner(runtime=config.runtime))
    log.info("learned motion generator: %s on %s", runner.manifest_path,
             type(runner.runner).__name__)
    return ((lambda: MotionGenerator(runner, seed=secrets.randbits(31))),
            WindowBatcher(runner, scheduler, max_batch=config.max_batch))


def _graph_batcher(config: ServerConfig, scheduler: InferenceScheduler) -> WindowBatcher | None:
    """With ``--renderer graph``: the renderer graph on its runtime behind a shared batcher."""
    if config.renderer != "graph":
        return None
    # One render call at a time holds the engine, so on a CPU runtime it may use every core.
    graph = GraphRenderer.load(config.renderer_model, config.renderer_runtime,
                               threads=config.workers)
    log.info("renderer graph: %s on %s, at most %d frames per call", config.renderer_model,
             graph.runtime, min(config.max_render_batch, graph.max_batch))
    return WindowBatcher(graph, scheduler, max_batch=min(config.max_render_batch,
                                                         graph.max_batch))


def build(config: ServerConfig, home: Path | None = None) -> tuple[FastAPI, SessionManager]:
    from threadpoolctl import threadpool_limits

    from vivify.engines.avatar.model_store import default_cache_dir

    # Parallelism comes from sessions on the worker threads. A BLAS pool inside every small
    # per-frame matmul fights them: measured ~3× the server CPU per session without this.
    threadpool_limits(limits=1, user_api="blas")
    limit_heaps()

    root = home or default_cache_dir().parent
    store = AvatarStore(root / "server", size=config.size)
    scheduler = InferenceScheduler(workers=config.workers)
    driver_factory, batcher = _drivers(config, scheduler)
    render_batcher = _graph_batcher(config, scheduler)
    manager = SessionManager(config, store, scheduler, MonotonicClock(),
                             capacity=max(config.max_sessions, 1),
                             driver_factory=driver_factory, batcher=batcher,
                             render_batcher=render_batcher)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()  # for tests and diagnostics
        scheduler.start()
        await store.ensure_default()
        if config.max_sessions <= 0:
            renderer = await store.renderer("default")
            manager.capacity = measure_capacity(store, config.workers, renderer, manager.graph)
        # Everything loaded so far (modules, models, the default avatar) lives as long as the
        # process: take it out of the collector's view, so the full collection after each
        # session close walks only session objects (~5 ms instead of ~65 ms, measured).
        gc.collect()
        gc.freeze()
        log.info("ready: %d sessions max", manager.capacity)
        try:
            yield
        finally:
            await manager.shutdown()
            for b in (batcher, render_batcher):
                if b is not None:
                    await b.aclose()
            scheduler.close()
            if manager.graph is not None:
                manager.graph.close()

    app = create_app(manager, token=config.token, cors_origins=config.cors_origins,
                     max_upload=config.max_upload_bytes, lifespan=lifespan)
    return app, manager


def serve(config: ServerConfig) -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets(config.token))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    if config.token is None and config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("no bearer token set while listening on %s: anyone can connect",
                    config.host)
    elif config.token is None:
        log.info("no bearer token: any program on this machine can use the API "
                 "(browser pages of other sites cannot: their Origin is refused)")
    app, manager = build(config)
    scheme = "https" if config.tls_cert else "http"
    print(f"Vivify is starting on {scheme}://{config.host}:{config.port}/ "
          f"(API docs at /docs)", flush=True)
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the previous handler; a
    # no-op handler there lets the process exit 0 after a clean drain instead of dying by it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server = VivifyServer(uvicorn.Config(
        app, host=config.host, port=config.port, log_config=None,
        ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key else None,
        timeout_graceful_shutdown=5, ws_max_size=WS_MAX_MESSAGE), manager)
    server.run()
    return 0

