"""``GET /healthz`` and ``GET /metrics`` (tag ``ops``): open, no token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from vivify.streamer.server.manager import SessionManager


def renderer_health(manager: SessionManager) -> dict[str, Any]:
    """Which renderer serves, and for the graph its runtime, batching and attached avatars."""
    graph, batcher = manager.graph, manager.render_batcher
    if graph is None or batcher is None:
        return {"kind": "cpu"}
    return {"kind": "graph", "runtime": graph.runtime, "avatars": len(graph.avatars),
            "cpu_fallbacks": manager.graph_fallbacks, "batching": batcher.stats.as_dict()}


class Metrics:
    """The Prometheus gauges, in a registry of their own (one per app, so tests can build
    many apps in one process), set from the manager when scraped."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, registry=registry)

        self.sessions = gauge("vivify_sessions", "live sessions")
        self.capacity = gauge("vivify_capacity_sessions", "admission limit")
        self.viewers = gauge("vivify_viewers", "broadcast viewers")
        self.late = gauge("vivify_late_slots", "slots played late, live sessions")
        self.dropped = gauge("vivify_dropped_pairs", "pairs dropped, live sessions")
        self.queue = gauge("vivify_scheduler_queue", "jobs waiting for a worker")
        self.busy = gauge("vivify_scheduler_busy_seconds", "worker time spent")
        self.created = gauge("vivify_sessions_created", "sessions created since start")
        self.batch_calls = gauge("vivify_generator_calls", "batched generator engine calls")
        self.batch_windows = gauge("vivify_generator_windows", "windows generated in those calls")
        self.batch_largest = gauge("vivify_generator_batch_largest", "largest batch so far")
        self.render_calls = gauge("vivify_render_batch_calls",
                                  "renderer graph calls (--renderer graph)")
        self.render_frames = gauge("vivify_render_batch_frames", "frames rendered by the graph")

    def scrape(self, manager: SessionManager) -> bytes:
        live = list(manager.sessions.values())
        self.sessions.set(len(live))
        self.capacity.set(manager.capacity)
        self.viewers.set(sum(len(s.viewers) for s in live))
        self.late.set(sum(s.media.stats.late_slots for s in live))
        self.dropped.set(sum(s.media.stats.dropped_pairs for s in live))
        self.queue.set(manager.scheduler.queued)
        self.busy.set(manager.scheduler.busy_seconds)
        self.created.set(manager.created_total)
        if manager.batcher is not None:
            self.batch_calls.set(manager.batcher.stats.calls)
            self.batch_windows.set(manager.batcher.stats.windows)
            self.batch_largest.set(manager.batcher.stats.largest)
        if manager.render_batcher is not None:
            self.render_calls.set(manager.render_batcher.stats.calls)
            self.render_frames.set(manager.render_batcher.stats.windows)
        return bytes(generate_latest(self.registry))


def router(manager: SessionManager) -> APIRouter:
    api = APIRouter(tags=["ops"])
    metrics_ = Metrics()

    @api.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "sessions": len(manager.sessions), "capacity": manager.capacity,
                "driver": manager.config.driver,
                "batching": manager.batcher.stats.as_dict() if manager.batcher else None,
                "renderer": renderer_health(manager)}

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(metrics_.scrape(manager), media_type=CONTENT_TYPE_LATEST)

    return api
