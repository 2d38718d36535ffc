"""The nodes as Ray actors: start them where Ray has room, hear when one dies, stop them.

Ray is imported here and only when a pool is made, so ``vivify`` without the ``cluster`` extra
still imports everything else; :func:`require_ray` says what to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from vivify.streamer.cluster.node import NodeSpec, VivifyNode, node_options
from vivify.streamer.optional import import_optional

log = logging.getLogger(__name__)
RAY_MISSING = ("cluster mode needs Ray: pip install '.[cluster]' (or pip install 'ray>=2.9') "
               "in this environment")


def require_ray() -> Any:
    """The ``ray`` module, or ImportError naming the extra to install."""
    return import_optional("ray", RAY_MISSING)


def ray_gpus(ray: Any) -> int:
    """GPUs in the Ray cluster (0 on a CPU host)."""
    return int(ray.cluster_resources().get("GPU", 0))


def default_node_count(ray: Any) -> int:
    """One node per GPU on GPU hosts, else one per core (Ray's CPUs) of the whole Ray cluster."""
    gpus = ray_gpus(ray)
    return gpus if gpus else max(1, int(ray.cluster_resources().get("CPU", 1)))


async def _awaited(ref: Any) -> Any:
    """An ObjectRef as a coroutine (for ``asyncio.wait_for``)."""
    return await ref


@dataclass
class RayNode:
    spec: NodeSpec
    actor: Any
    info: dict[str, Any]
    watch_ref: Any = None


PLACEMENT_GRACE_S = 30.0  # beyond a node's own start timeout, for Ray to place its actor
LostCallback = Callable[[str, str], Awaitable[None]]


class RayNodePool:
    """Node actors by name. :meth:`watch` tells ``on_lost(name, reason)`` when one dies."""

    def __init__(self, specs: list[NodeSpec], *, gpus: bool | None = None) -> None:
        self.ray = require_ray()
        if not self.ray.is_initialized():
            raise RuntimeError("call ray.init() (local, or address=...) before starting nodes")
        self.specs = specs
        self.gpus = ray_gpus(self.ray) > 0 if gpus is None else gpus
        self.nodes: dict[str, RayNode] = {}
        self._watchers: list[asyncio.Task[None]] = []
        self._stopped = False

    async def start(self) -> list[dict[str, Any]]:
        """Start every node at once (each measures its capacity at start: ~10–60 s, in
        parallel); the start info of each (name, url, pid, first health). A node that fails to
        start is stopped and left out, with the reason logged; none at all is an error."""
        remote = self.ray.remote(VivifyNode)
        actors = {s.name: remote.options(name=f"vivify-node-{s.name}-{id(self):x}",
                                         **node_options(self.gpus)).remote(s)
                  for s in self.specs}
        # An actor Ray cannot place (no free core or GPU left) would wait forever: bounded.
        limit = max(s.start_timeout_s for s in self.specs) + PLACEMENT_GRACE_S
        infos = await asyncio.gather(*(asyncio.wait_for(_awaited(a.start.remote()), limit)
                                       for a in actors.values()), return_exceptions=True)
        started: list[dict[str, Any]] = []
        for spec, info in zip(self.specs, infos, strict=True):
            if isinstance(info, BaseException):
                why = (f"not started in {limit:.0f} s (is a core or GPU free in the Ray "
                       "cluster for it?)") if isinstance(info, TimeoutError) else info
                log.error("node %s did not start: %s", spec.name, why)
                with contextlib.suppress(Exception):
                    self.ray.kill(actors[spec.name])
                continue
            self.nodes[spec.name] = RayNode(spec, actors[spec.name], info)
            started.append(info)
        if not started:
            raise RuntimeError("no node started (see the log above)")
        return started

    def watch(self, on_lost: LostCallback) -> None:
        """One task per node awaiting its ``watch()`` call: it returns when the server exits,
        raises when the actor dies; either way the node is lost."""
        for name, node in self.nodes.items():
            node.watch_ref = node.actor.watch.remote()
            self._watchers.append(asyncio.create_task(self._watch(name, node, on_lost)))

    async def _watch(self, name: str, node: RayNode, on_lost: LostCallback) -> None:
        try:
            code = await node.watch_ref
            reason = f"its vivify serve exited with status {code}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # RayActorError and friends: the actor is gone
            reason = f"its Ray actor died ({type(exc).__name__})"
        await on_lost(name, reason)

    def kill(self, name: str) -> None:
        """Kill a node's actor now (its server dies with it: PR_SET_PDEATHSIG)."""
        node = self.nodes.get(name)
        if node is not None:
            with contextlib.suppress(Exception):
                self.ray.kill(node.actor, no_restart=True)

    async def stop(self, limit_s: float = 15.0) -> None:
        """Drain every node (SIGTERM: its sessions are told ``session_closed``), then kill the
        actors. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        for task in self._watchers:
            task.cancel()
        for task in self._watchers:
            with contextlib.suppress(BaseException):
                await task
        refs = [n.actor.stop.remote() for n in self.nodes.values()]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*refs, return_exceptions=True), limit_s)
        for name in list(self.nodes):
            self.kill(name)
