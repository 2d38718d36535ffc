"""Where a new session goes, and which node owns an existing one: pure bookkeeping, no I/O.

The ingress (``ingress.py``) asks :meth:`Placement.candidates` for the order in which to offer a
new session to the nodes, tells it what each node answered, and looks sessions up by id. Nothing
here awaits or talks to Ray, so every rule is unit-tested without a cluster
(tests/test_cluster.py).

Headroom is the node's own admission capacity (measured by ``vivify serve`` at start, or its
``--max-sessions``) minus the sessions it reports on ``/healthz``, minus the placements the
ingress has in flight to it. The health poll is a second or so old at any moment, so the count
is also kept up to date locally (+1 on each session placed, −1 on each delete) until the next
poll replaces it; a node whose view was stale answers ``503 server_full``, and the ingress
spills over to the next candidate (and :meth:`Placement.refused` marks that node full).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

NodeStateName = Literal["starting", "up", "draining", "lost"]
LOST_REMEMBERED = 4096  # ids of sessions lost with their node: answered 410, then forgotten


@dataclass
class NodeState:
    """What the ingress knows of one node."""

    name: str
    url: str = ""
    capacity: int = 0
    sessions: int = 0
    state: NodeStateName = "starting"
    pending: int = 0  # placements sent to it and not answered yet
    placed_total: int = 0
    refused_total: int = 0
    health_failures: int = 0
    last_health: float | None = None  # time.monotonic() of the last good /healthz
    lost_reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # the node's last /healthz, as sent

    @property
    def headroom(self) -> int:
        """Sessions this node should still admit (0 unless it is up)."""
        if self.state != "up":
            return 0
        return max(0, self.capacity - self.sessions - self.pending)

    def public(self, owned: int) -> dict[str, Any]:
        """The node as ``GET /v1/cluster/nodes`` lists it; ``owned``: sessions the ingress
        routes to it."""
        age = None if self.last_health is None else round(time.monotonic() - self.last_health, 2)
        return {"name": self.name, "url": self.url, "state": self.state,
                "capacity": self.capacity, "sessions": self.sessions, "headroom": self.headroom,
                "routed_sessions": owned, "pending": self.pending,
                "placed_total": self.placed_total, "refused_total": self.refused_total,
                "health_age_s": age, "lost_reason": self.lost_reason}


class UnknownNode(KeyError):
    """No node of that name."""


class Placement:
    """The nodes, their headroom, and the session → node table."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeState] = {}
        self.owner: dict[str, str] = {}  # session id → node name
        self.lost: OrderedDict[str, str] = OrderedDict()  # session id → its lost node's name

    # ------------------------------------------------------------------ nodes
    def add(self, name: str, url: str = "") -> NodeState:
        node = self.nodes[name] = NodeState(name, url)
        return node

    def node(self, name: str) -> NodeState:
        try:
            return self.nodes[name]
        except KeyError:
            raise UnknownNode(name) from None

    def healthy(self, name: str, health: dict[str, Any]) -> None:
        """A good ``/healthz`` from ``name``: its capacity and session count, as it says."""
        node = self.node(name)
        if node.state == "lost":
            return  # a lost node stays lost: its sessions were already ended
        node.capacity = int(health.get("capacity", node.capacity))
        node.sessions = int(health.get("sessions", node.sessions))
        node.info = dict(health)
        node.health_failures = 0
        node.last_health = time.monotonic()
        if node.state == "starting":
            node.state = "up"

    def unhealthy(self, name: str) -> int:
        """A failed health check; the count of failures in a row."""
        node = self.node(name)
        node.health_failures += 1
        return node.health_failures

    def drain(self, name: str) -> NodeState:
        """No new sessions on ``name``; the ones it has go on."""
        node = self.node(name)
        if node.state in ("up", "starting"):
            node.state = "draining"
        return node

    def resume(self, name: str) -> NodeState:
        """Undo :meth:`drain`."""
        node = self.node(name)
        if node.state == "draining":
            node.state = "up" if node.last_health is not None else "starting"
        return node

    def mark_lost(self, name: str, reason: str) -> list[str]:
        """``name`` is gone: the ids of the sessions it owned (now answered 410)."""
        node = self.node(name)
        node.state, node.lost_reason = "lost", reason
        node.pending = node.sessions = node.capacity = 0
        ids = [sid for sid, owner in self.owner.items() if owner == name]
        for sid in ids:
            del self.owner[sid]
            self.lost[sid] = name
        while len(self.lost) > LOST_REMEMBERED:
            self.lost.popitem(last=False)
        return ids

    # ------------------------------------------------------------------ placing
    def candidates(self) -> list[str]:
        """Nodes to offer a new session to, in order: most headroom first (ties: fewer sessions,
        then name), then the up nodes that look full (their count may be stale; the node's
        own admission decides). Draining, starting and lost nodes are never offered one."""
        up = [n for n in self.nodes.values() if n.state == "up"]
        up.sort(key=lambda n: (-n.headroom, n.sessions + n.pending, n.name))
        return [n.name for n in up]

    def begin(self, name: str) -> None:
        self.node(name).pending += 1

    def placed(self, name: str, session_id: str) -> None:
        """The node admitted the session: route its id there."""
        node = self.node(name)
        node.pending = max(0, node.pending - 1)
        node.sessions += 1
        node.placed_total += 1
        self.owner[session_id] = name

    def refused(self, name: str) -> None:
        """The node answered 503 (full or shutting down): count it full until its next health."""
        node = self.node(name)
        node.pending = max(0, node.pending - 1)
        node.refused_total += 1
        node.sessions = max(node.sessions, node.capacity)

    def failed(self, name: str) -> None:
        """The placement ended without an admission (an error answer, no answer)."""
        node = self.node(name)
        node.pending = max(0, node.pending - 1)

    # ------------------------------------------------------------------ routing
    def route(self, session_id: str) -> str | None:
        """The node that owns ``session_id``, or None."""
        return self.owner.get(session_id)

    def lost_node_of(self, session_id: str) -> str | None:
        """The lost node a session died with, or None."""
        return self.lost.get(session_id)

    def forget(self, session_id: str) -> None:
        """The session ended (deleted, or its node answered 404)."""
        name = self.owner.pop(session_id, None)
        if name is not None and name in self.nodes:
            node = self.nodes[name]
            node.sessions = max(0, node.sessions - 1)

    def owned_by(self, name: str) -> list[str]:
        return [sid for sid, owner in self.owner.items() if owner == name]

    def totals(self, states: Iterable[str] = ("up", "draining")) -> dict[str, int]:
        live = [n for n in self.nodes.values() if n.state in states]
        return {"nodes": len(live), "capacity": sum(n.capacity for n in live),
                "sessions": sum(n.sessions for n in live),
                "headroom": sum(n.headroom for n in live)}
