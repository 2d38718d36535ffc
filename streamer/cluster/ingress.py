"""The cluster's front door: one FastAPI app that places sessions on nodes and routes to them.

Clients talk to it exactly as to one ``vivify serve`` (docs/api.md), with the same bearer token
(checked by the server's own guard, streamer/server/guard.py). What it adds:

- ``POST /v1/sessions`` goes to the node with the most headroom (placement.py); a node that
  answers ``503`` is skipped for the next one (spill-over); the answer gains ``"node"``.
- Every route of a session (``GET``/``DELETE /v1/sessions/{id}``, ``/viewers``, ``/speak``, the
  WebSocket) goes to the node that owns it. The SDP answer is relayed untouched, so ICE and
  media run between the client and that node, never through here.
- Node loss (its Ray actor died, its server exited, or its health failed twice): each of its
  WebSocket clients gets ``{"type": "error", "code": "session_closed", "reason": "node_lost",
  "node", "message"}`` then close 1011; its sessions' routes answer ``410 session_lost``; new
  sessions go to the other nodes. Every forward has a timeout (proxy.py).
- ``GET /v1/cluster/nodes``; ``POST /v1/cluster/nodes/{name}/drain`` (no new sessions there,
  its sessions go on) and ``/resume``; ``GET /healthz`` sums the nodes.

Avatar uploads and deletes are sent to every live node (each has its own avatar store), reads
to the first live one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response

from vivify.streamer.cluster.placement import Placement, UnknownNode
from vivify.streamer.cluster.proxy import (
    HttpForwarder,
    NodeUnreachable,
    SocketBridge,
    Timeouts,
    error,
    relay,
)
from vivify.streamer.server.guard import BodyLimit, GuardConfig, RequestGuard

log = logging.getLogger(__name__)
WS_NODE_LOST = 1011  # "the server hit an unexpected condition": the session's node is gone
WS_UNKNOWN_SESSION = 4404  # as the server's own WebSocket refusal
MAX_SESSION_BODY = 256 * 1024  # as the server: an SDP offer and a little
MAX_UPLOAD = 25 * 2**20 + 64 * 1024
HEALTH_FAILURES_LOST = 2
RECONCILE_AT_ONCE = 16  # sessions asked after per health poll when the counts disagree


@dataclass(frozen=True)
class IngressConfig:
    token: str | None = None  # the clients' bearer token (as `vivify serve --token`)
    node_token: str = ""  # the nodes' own token, held here only
    health_interval_s: float = 1.0
    timeouts: Timeouts = field(default_factory=Timeouts)


class NodeControl(Protocol):
    """What the ingress needs from whatever runs the nodes (pool.py's Ray pool)."""

    def watch(self, on_lost: Callable[[str, str], Awaitable[None]]) -> None: ...

    def kill(self, name: str) -> None: ...


class Cluster:
    """The ingress's state: placement, the forwarder, the open WebSocket bridges, monitoring."""

    def __init__(self, config: IngressConfig, control: NodeControl | None = None) -> None:
        self.config = config
        self.control = control
        self.placement = Placement()
        self.forward = HttpForwarder(config.node_token, config.timeouts)
        self.bridges: dict[str, set[SocketBridge]] = {}
        self.pids: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._probes: set[asyncio.Task[bool]] = set()
        self.lost_events: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ nodes
    def add_node(self, name: str, url: str, health: dict[str, Any] | None = None,
                 pid: int | None = None) -> None:
        self.placement.add(name, url)
        if health is not None:
            self.placement.healthy(name, health)
        if pid is not None:
            self.pids[name] = pid

    def start_monitoring(self) -> None:
        if self.control is not None:
            self.control.watch(self.node_lost)
        self._tasks.append(asyncio.create_task(self._health_loop()))

    async def stop_monitoring(self) -> None:
        """No more health checks or loss handling (before the nodes are stopped on purpose)."""
        tasks, self._tasks = [*self._tasks, *self._probes], []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def aclose(self) -> None:
        await self.stop_monitoring()
        await self.forward.aclose()

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            names = [n.name for n in self.placement.nodes.values() if n.state != "lost"]
            for name, result in zip(names, await asyncio.gather(
                    *(self.check_node(n) for n in names), return_exceptions=True), strict=True):
                if isinstance(result, Exception):  # a bad answer must not stop the monitor
                    log.warning("health of node %s: %r", name, result)

    def probe_soon(self, name: str) -> None:
        """Check ``name`` now, in the background (it just failed to answer a request)."""
        task = asyncio.create_task(self.check_node(name, lose_after=1))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def check_node(self, name: str, *, lose_after: int = HEALTH_FAILURES_LOST) -> bool:
        """One health probe; the node is lost after ``lose_after`` failures in a row."""
        node = self.placement.node(name)
        if node.state == "lost":
            return False
        try:
            health = await self.forward.health(name, node.url)
        except Exception:
            if self.placement.unhealthy(name) >= lose_after:
                await self.node_lost(name, f"{lose_after} health checks failed")
                return False
            return True
        self.placement.healthy(name, health)
        owned = self.placement.owned_by(name)
        if len(owned) > int(health.get("sessions", 0)):
            await self._reconcile(name, owned[:RECONCILE_AT_ONCE])
        return True

    async def _reconcile(self, name: str, ids: list[str]) -> None:
        """The node runs fewer sessions than the ingress routes to it: some ended there by
        themselves (peer gone, idle timeout). Ask after a few; forget those it no longer has,
        so the routing table stays as small as the live sessions."""
        url = self.placement.node(name).url

        async def gone(sid: str) -> bool:
            try:
                r = await self.forward.send(name, "GET", f"{url}/v1/sessions/{sid}",
                                            limit_s=self.config.timeouts.health)
            except NodeUnreachable:
                return False
            return r.status_code == 404

        for sid, ended in zip(ids, await asyncio.gather(*(gone(s) for s in ids)), strict=True):
            if ended and self.placement.route(sid) == name:
                self.placement.owner.pop(sid, None)  # its count came with the health answer

    async def node_lost(self, name: str, reason: str) -> None:
        """End everything on ``name``: tell its WebSocket clients, answer 410 for its sessions,
        place nothing more there, and make sure its actor is gone."""
        node = self.placement.node(name)
        if node.state == "lost":
            return
        ids = self.placement.mark_lost(name, reason)
        log.warning("node %s lost (%s): %d sessions ended", name, reason, len(ids))
        self.lost_events.append({"node": name, "reason": reason, "sessions": len(ids)})
        for sid in ids:
            for bridge in list(self.bridges.get(sid, ())):
                bridge.end(lost_event(name, reason), WS_NODE_LOST, "node lost")
        if self.control is not None:
            self.control.kill(name)

    # ------------------------------------------------------------------ placing
    async def create_session(self, body: bytes) -> Response:
        tried: list[str] = []
        for name in self.placement.candidates():
            node = self.placement.node(name)
            if node.state != "up":
                continue  # lost or drained while we were trying the previous one
            tried.append(name)
            self.placement.begin(name)
            try:
                r = await self.forward.send(name, "POST", node.url + "/v1/sessions",
                                            limit_s=self.config.timeouts.create, body=body)
            except NodeUnreachable:
                self.placement.failed(name)
                self.probe_soon(name)
                continue
            if r.status_code == 503:
                self.placement.refused(name)
                continue
            if r.status_code != 201:
                self.placement.failed(name)
                return relay(r)  # the client's mistake (400, 404, 422): the same everywhere
            data = r.json()
            if node.state == "lost":  # it died while answering: that session is gone too
                continue
            self.placement.placed(name, str(data["id"]))
            data["node"] = name
            return Response(json.dumps(data), status_code=201, media_type="application/json")
        where = f" (tried {', '.join(tried)})" if tried else " (no node is up)"
        return error(503, "server_full", "every node of the cluster is full or unavailable"
                     + where, {"Retry-After": "1"})

    # ------------------------------------------------------------------ routing
    def _owner(self, session_id: str) -> tuple[str | None, Response | None]:
        name = self.placement.route(session_id)
        if name is not None:
            return name, None
        lost = self.placement.lost_node_of(session_id)
        if lost is not None:
            reason = self.placement.node(lost).lost_reason or "lost"
            return None, error(410, "session_lost", f"session {session_id[:64]} ended: its "
                               f"node {lost} was lost ({reason})")
        return None, error(404, "unknown_session", f"no session {session_id[:64]!r}")

    async def session_request(self, session_id: str, method: str, suffix: str,
                              body: bytes | None, limit_s: float) -> Response:
        name, refusal = self._owner(session_id)
        if refusal is not None or name is None:
            return refusal or error(404, "unknown_session", "no such session")
        url = f"{self.placement.node(name).url}/v1/sessions/{session_id}{suffix}"
        try:
            r = await self.forward.send(name, method, url, limit_s=limit_s, body=body)
        except NodeUnreachable as exc:
            if not await self.check_node(name, lose_after=1):
                return self._owner(session_id)[1] or error(410, "session_lost", str(exc))
            return error(504, "node_timeout", str(exc))
        if (r.status_code == 404 and suffix == "") or (method == "DELETE" and
                                                       r.status_code == 204):
            self.placement.forget(session_id)
        return relay(r)

    async def session_socket(self, ws: WebSocket, session_id: str) -> None:
        await ws.accept()
        name, _ = self._owner(session_id)
        if name is None:
            lost = self.placement.lost_node_of(session_id)
            if lost is not None:
                reason = self.placement.node(lost).lost_reason or "lost"
                await ws.send_text(json.dumps(lost_event(lost, reason)))
                await ws.close(code=WS_NODE_LOST, reason="node lost")
            else:
                await ws.close(code=WS_UNKNOWN_SESSION, reason=f"no session {session_id[:64]}")
            return
        node = self.placement.node(name)
        bridge = SocketBridge(ws, session_id, name)
        url = "ws" + node.url[len("http"):] + f"/v1/sessions/{session_id}/ws"
        try:
            await bridge.open(url, self.config.node_token, self.config.timeouts.ws_open)
        except Exception as exc:
            if not await self.check_node(name, lose_after=1):
                await ws.send_text(json.dumps(lost_event(name, str(node.lost_reason))))
                await ws.close(code=WS_NODE_LOST, reason="node lost")
            else:
                await ws.close(code=1011, reason=f"node {name}: {type(exc).__name__}"[:120])
            return
        self.bridges.setdefault(session_id, set()).add(bridge)

        async def upstream_lost() -> None:  # dropped without a close: is the node gone?
            await self.check_node(name, lose_after=1)

        try:
            await bridge.run(upstream_lost)
        finally:
            peers = self.bridges.get(session_id)
            if peers is not None:
                peers.discard(bridge)
                if not peers:
                    del self.bridges[session_id]
        if bridge.upstream_close is not None and bridge.upstream_close[0] in (1000, 1012):
            self.placement.forget(session_id)  # the node ended the session (session_closed)

    # ------------------------------------------------------------------ avatars
    def _live_urls(self) -> list[tuple[str, str]]:
        return [(n.name, n.url) for n in self.placement.nodes.values()
                if n.state in ("up", "draining")]

    async def to_first(self, method: str, path: str) -> Response:
        for name, url in self._live_urls():
            with contextlib.suppress(NodeUnreachable):
                return relay(await self.forward.send(name, method, url + path,
                                                     limit_s=self.config.timeouts.request))
        return error(503, "no_node", "no node of the cluster answered")

    async def to_all(self, request: Request, path: str) -> Response:
        """An avatar upload or delete, sent to every live node; the first answer returned."""
        body = await request.body()
        answers = []
        for name, url in self._live_urls():
            with contextlib.suppress(NodeUnreachable):
                answers.append(await self.forward.send(
                    name, request.method, url + path, body=body or None,
                    content_type=request.headers.get("content-type"),
                    limit_s=self.config.timeouts.create))
        if not answers:
            return error(503, "no_node", "no node of the cluster answered")
        return relay(answers[0])

    # ------------------------------------------------------------------ views
    def nodes_view(self) -> dict[str, Any]:
        nodes = []
        for node in self.placement.nodes.values():
            item = node.public(len(self.placement.owned_by(node.name)))
            item["pid"] = self.pids.get(node.name)
            nodes.append(item)
        return {"nodes": nodes, "totals": self.placement.totals(),
                "lost": list(self.lost_events)}


def lost_event(node: str, reason: str) -> dict[str, Any]:
    """The last event a session's WebSocket client gets when its node is lost: the server's
    ``session_closed`` error event (docs/api.md), with why."""
    return {"type": "error", "code": "session_closed", "reason": "node_lost", "node": node,
            "message": f"the session's node {node} was lost ({reason}); start a new session"}


def ingress_limits() -> tuple[BodyLimit, ...]:
    return (BodyLimit("POST", r"/v1/avatars", MAX_UPLOAD, "image_too_large"),
            BodyLimit("POST", r"/v1/sessions", MAX_SESSION_BODY),
            BodyLimit("POST", r"/v1/sessions/[^/]+/viewers", MAX_SESSION_BODY))


def create_ingress(cluster: Cluster, lifespan: Callable[[FastAPI], Any] | None = None,
                   static: bool = True) -> FastAPI:
    """The ingress app over ``cluster`` (its nodes added, monitoring started by ``lifespan``
    or by the caller)."""
    app = FastAPI(title="Vivify cluster", version="0.1.0", lifespan=lifespan,
                  description="Sessions placed across Vivify nodes on Ray (docs/scale-out.md).")
    app.add_middleware(RequestGuard, config=GuardConfig(token=cluster.config.token,
                                                        limits=ingress_limits()))
    t = cluster.config.timeouts

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        totals = cluster.placement.totals()
        return {"status": "ok" if totals["nodes"] else "no_nodes", "cluster": True, **totals}

    @app.get("/v1/cluster/nodes", tags=["cluster"])
    async def list_nodes() -> dict[str, Any]:
        return cluster.nodes_view()

    async def _node_op(name: str, op: str) -> Response:
        try:
            node = (cluster.placement.drain if op == "drain" else cluster.placement.resume)(name)
        except UnknownNode:
            return error(404, "unknown_node", f"no node {name[:64]!r}")
        if node.state == "lost":
            return error(409, "node_lost", f"node {name} is lost ({node.lost_reason})")
        view = node.public(len(cluster.placement.owned_by(name)))
        return Response(json.dumps(view), media_type="application/json")

    @app.post("/v1/cluster/nodes/{name}/drain", tags=["cluster"])
    async def drain(name: str) -> Response:
        """No new sessions on this node; its sessions go on until they end."""
        return await _node_op(name, "drain")

    @app.post("/v1/cluster/nodes/{name}/resume", tags=["cluster"])
    async def resume(name: str) -> Response:
        return await _node_op(name, "resume")

    @app.post("/v1/sessions", status_code=201, tags=["sessions"])
    async def create_session(request: Request) -> Response:
        return await cluster.create_session(await request.body())

    @app.get("/v1/sessions/{session_id}", tags=["sessions"])
    async def session_stats(session_id: str) -> Response:
        return await cluster.session_request(session_id, "GET", "", None, t.request)

    @app.delete("/v1/sessions/{session_id}", tags=["sessions"])
    async def delete_session(session_id: str) -> Response:
        return await cluster.session_request(session_id, "DELETE", "", None, t.request)

    @app.post("/v1/sessions/{session_id}/viewers", tags=["sessions"])
    async def add_viewer(session_id: str, request: Request) -> Response:
        return await cluster.session_request(session_id, "POST", "/viewers",
                                             await request.body(), t.create)

    @app.post("/v1/sessions/{session_id}/speak", tags=["sessions"])
    async def speak(session_id: str, request: Request) -> Response:
        return await cluster.session_request(session_id, "POST", "/speak",
                                             await request.body(), t.speak)

    @app.websocket("/v1/sessions/{session_id}/ws")
    async def session_ws(ws: WebSocket, session_id: str) -> None:
        await cluster.session_socket(ws, session_id)

    @app.get("/v1/avatars", tags=["avatars"])
    async def list_avatars() -> Response:
        return await cluster.to_first("GET", "/v1/avatars")

    @app.get("/v1/avatars/{avatar_id}", tags=["avatars"])
    async def get_avatar(avatar_id: str) -> Response:
        return await cluster.to_first("GET", f"/v1/avatars/{avatar_id}")

    @app.get("/v1/avatars/{avatar_id}/preview.jpg", tags=["avatars"])
    async def avatar_preview(avatar_id: str) -> Response:
        return await cluster.to_first("GET", f"/v1/avatars/{avatar_id}/preview.jpg")

    @app.post("/v1/avatars", tags=["avatars"])
    async def upload_avatar(request: Request) -> Response:
        return await cluster.to_all(request, "/v1/avatars")

    @app.delete("/v1/avatars/{avatar_id}", tags=["avatars"])
    async def delete_avatar(avatar_id: str, request: Request) -> Response:
        return await cluster.to_all(request, f"/v1/avatars/{avatar_id}")

    if static:
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(packages=[("vivify.client_web", ".")], html=True),
                  name="client")
    return app


@contextlib.asynccontextmanager
async def monitoring(cluster: Cluster) -> AsyncIterator[None]:
    """Run ``cluster``'s monitors for the life of a block (the app's lifespan)."""
    cluster.start_monitoring()
    try:
        yield
    finally:
        await cluster.aclose()
