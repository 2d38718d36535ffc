"""``vivify cluster``: Vivify nodes on Ray (one per core, or per GPU) behind one ingress.

Quickstart and the multi-machine recipe: docs/scale-out.md. The ingress serves the same API as
``vivify serve`` on ``--port``; each node is a real ``vivify serve`` on its own port, reached
only by the ingress (with a token of its own) and by the clients' media (ICE).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI imports this module for its parser: FastAPI, httpx, Ray load later
    from vivify.streamer.cluster.ingress import Cluster
    from vivify.streamer.cluster.node import NodeSpec
    from vivify.streamer.cluster.pool import RayNodePool

log = logging.getLogger("vivify.cluster")
# Settings an operator gives the nodes through the environment of `vivify cluster`; the
# ingress sets HOST, PORT and TOKEN of each node itself.
NODE_OWN = frozenset({"VIVIFY_HOST", "VIVIFY_PORT", "VIVIFY_TOKEN"})
# Inference threads per node. A node is one core to Ray, but with one thread its renders wait
# behind each other while a neighbour's core idles: measured on 2 cores (make bench-cluster,
# 2 nodes), 3 sessions held at 25 fps with 1 thread per node, 4 with 2.
NODE_WORKERS = 2


@dataclass
class ClusterOptions:
    nodes: int | None = None  # None: one per GPU, else one per core of the Ray cluster
    address: str | None = None  # an existing Ray cluster (ray.init(address=...))
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    node_host: str = "127.0.0.1"  # where nodes listen: 0.0.0.0 across machines
    max_sessions: int = 0  # per node; 0: each node measures its own at start
    workers: int | None = None  # per node; default NODE_WORKERS
    node_env: dict[str, str] = field(default_factory=dict)
    health_interval_s: float = 1.0
    node_token: str | None = None  # None: a random one, known only to this ingress


def node_specs(opts: ClusterOptions, count: int) -> list[NodeSpec]:
    from vivify.streamer.cluster.node import NodeSpec

    node_token = opts.node_token or secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if k.startswith("VIVIFY_") and k not in NODE_OWN}
    env.update(opts.node_env)
    env.setdefault("VIVIFY_WORKERS", str(NODE_WORKERS))
    if opts.workers:
        env["VIVIFY_WORKERS"] = str(opts.workers)
    if opts.max_sessions:
        env["VIVIFY_MAX_SESSIONS"] = str(opts.max_sessions)
    return [NodeSpec(name=f"n{i}", token=node_token, env=dict(env), host=opts.node_host)
            for i in range(count)]


def init_ray(address: str | None, num_cpus: int | None = None) -> Any:
    """Join ``address`` or start a local Ray (no dashboard; loopback); the ray module."""
    from vivify.streamer.cluster.pool import require_ray

    ray = require_ray()
    if not ray.is_initialized():
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    return ray


@contextlib.asynccontextmanager
async def running_cluster(opts: ClusterOptions) -> AsyncIterator[tuple[Cluster, RayNodePool]]:
    """Nodes started on the (already initialised) Ray, an ingress :class:`Cluster` over them,
    its monitors running; everything stopped at the end."""
    from vivify.streamer.cluster.ingress import Cluster, IngressConfig
    from vivify.streamer.cluster.pool import RayNodePool, default_node_count, require_ray

    ray = require_ray()
    count = opts.nodes or default_node_count(ray)
    specs = node_specs(opts, count)
    pool = RayNodePool(specs)
    started = await pool.start()
    cluster = Cluster(IngressConfig(token=opts.token, node_token=specs[0].token,
                                    health_interval_s=opts.health_interval_s), pool)
    for info in started:
        cluster.add_node(info["name"], info["url"], info["health"], info.get("pid"))
        log.info("node %s at %s: capacity %s", info["name"], info["url"],
                 info["health"].get("capacity"))
    cluster.start_monitoring()
    try:
        yield cluster, pool
    finally:
        await cluster.aclose()  # monitors first: stopping nodes is no node loss
        await pool.stop()


def draining_server(config: Any, cluster: Cluster, pool: RayNodePool) -> Any:
    """uvicorn's server, with the nodes drained *before* it closes the client connections: each
    node's sessions send ``session_closed`` through the ingress's bridges first (as
    ``vivify serve`` does for its own sessions), then uvicorn closes what is left."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        async def shutdown(self, sockets: list[Any] | None = None) -> None:
            await cluster.stop_monitoring()
            await pool.stop()
            await asyncio.sleep(0.1)  # the bridges flush the last events
            await super().shutdown(sockets)

    return DrainingServer(config)


async def serve_cluster(opts: ClusterOptions) -> int:
    import uvicorn

    from vivify.streamer.cluster.ingress import create_ingress

    async with running_cluster(opts) as (cluster, pool):
        app = create_ingress(cluster)
        totals = cluster.placement.totals()
        print(f"Vivify cluster: {totals['nodes']} nodes, {totals['capacity']} sessions, on "
              f"http://{opts.host}:{opts.port}/ (nodes: GET /v1/cluster/nodes)", flush=True)
        server = draining_server(uvicorn.Config(app, host=opts.host, port=opts.port,
                                                log_config=None, timeout_graceful_shutdown=5),
                                 cluster, pool)
        # uvicorn stops on SIGTERM/SIGINT, then re-raises the signal to the previous handler:
        # a no-op one lets the nodes be drained and stopped after it (as `vivify serve`).
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        await server.serve()
    return 0


def _cmd_cluster(args: argparse.Namespace) -> int:
    opts = ClusterOptions(nodes=args.nodes, address=args.address, host=args.host,
                          port=args.port, token=args.token or os.environ.get("VIVIFY_TOKEN"),
                          node_host=args.node_host, max_sessions=args.max_sessions,
                          workers=args.workers, health_interval_s=args.health_interval,
                          node_token=args.node_token or os.environ.get("VIVIFY_NODE_TOKEN"))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        ray = init_ray(opts.address)
    except ImportError as exc:
        print(f"vivify: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve_cluster(opts))
    finally:
        ray.shutdown()


def add_cluster_parser(sub: Any) -> argparse.ArgumentParser:
    """``vivify cluster`` on the ``vivify`` command's subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "cluster", help="run Vivify nodes on Ray behind one ingress (docs/scale-out.md)")
    p.add_argument("--nodes", type=int, default=None,
                   help="nodes to start (default: one per GPU, else one per core of the Ray "
                        "cluster)")
    p.add_argument("--address", default=None,
                   help="join this Ray cluster (ray.init(address=...), e.g. auto or "
                        "ray://head:10001); default: a local Ray on this machine")
    p.add_argument("--host", default="127.0.0.1", help="the ingress's bind address")
    p.add_argument("--port", type=int, default=8080, help="the ingress's port (8080)")
    p.add_argument("--token", default=None,
                   help="require this bearer token from clients (VIVIFY_TOKEN)")
    p.add_argument("--node-host", default="127.0.0.1",
                   help="where nodes listen; 0.0.0.0 when Ray spans machines")
    p.add_argument("--max-sessions", type=int, default=0,
                   help="admission limit per node (0: each node measures its own)")
    p.add_argument("--workers", type=int, default=None,
                   help=f"inference threads per node ({NODE_WORKERS})")
    p.add_argument("--health-interval", type=float, default=1.0, metavar="SECONDS",
                   help="how often the ingress reads each node's /healthz (1)")
    p.add_argument("--node-token", default=None,
                   help="the token nodes ask of the ingress (VIVIFY_NODE_TOKEN; default: "
                        "random); set it to reach a node directly when debugging")
    p.set_defaults(func=_cmd_cluster)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m vivify.streamer.cluster.command``: the same as ``vivify cluster``."""
    parser = argparse.ArgumentParser(prog="vivify")
    add_cluster_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["cluster", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health poll otherwise
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
