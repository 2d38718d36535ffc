"""Cluster mode (streamer/cluster/): placement, spill-over, routing, drain and node loss.

The placement rules are checked without Ray. The rest runs a real local Ray (2 CPUs, no
dashboard, loopback only) with two real ``vivify serve`` nodes behind the real ingress on
uvicorn, driven over HTTP and WebSocket as a client would. Sessions are broadcasts without an
offer (driven by their WebSocket), so no WebRTC is needed to check where they go.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.net import free_port
from tests.support.waiting import wait_until
from vivify.streamer.cluster.ingress import Cluster, IngressConfig, lost_event
from vivify.streamer.cluster.placement import Placement
from vivify.streamer.cluster.proxy import Timeouts

TOKEN = "cluster-test-token"
BROADCAST = {"mode": "broadcast", "avatar": "default"}


# ============================================================================ placement, no Ray


def _placement(**capacity: int) -> Placement:
    p = Placement()
    for name, cap in capacity.items():
        p.add(name, f"http://{name}")
        p.healthy(name, {"capacity": cap, "sessions": 0})
    return p


def test_most_headroom_first_then_fewer_sessions_then_name() -> None:
    p = _placement(a=1, b=3, c=2)
    assert p.candidates() == ["b", "c", "a"]
    p.begin("b")
    p.placed("b", "s1")
    p.begin("b")
    p.placed("b", "s2")  # b: 1 left, like a; c: 2
    assert p.candidates() == ["c", "a", "b"]  # a and b tie on headroom: a has fewer sessions
    assert p.route("s1") == "b"


def test_in_flight_placements_count_against_headroom() -> None:
    p = _placement(a=2, b=2)
    p.begin("a")
    assert p.candidates()[0] == "b"
    p.failed("a")
    assert p.node("a").headroom == 2


def test_a_refusal_marks_the_node_full_until_its_next_health() -> None:
    p = _placement(a=4, b=1)
    p.begin("a")
    p.refused("a")  # its view was stale: it is full
    assert p.candidates() == ["b", "a"] and p.node("a").headroom == 0
    p.healthy("a", {"capacity": 4, "sessions": 1})
    assert p.node("a").headroom == 3


def test_drained_and_lost_nodes_get_no_new_sessions() -> None:
    p = _placement(a=2, b=2, c=2)
    p.begin("a")
    p.placed("a", "s1")
    p.drain("b")
    assert p.candidates() == ["c", "a"]
    assert p.route("s1") == "a"  # a drained node's sessions still route (b has none here)
    assert p.mark_lost("a", "gone") == ["s1"]
    assert p.candidates() == ["c"]
    assert p.route("s1") is None and p.lost_node_of("s1") == "a"
    p.healthy("a", {"capacity": 2, "sessions": 0})  # a late health answer revives nothing
    assert p.node("a").state == "lost"
    p.resume("b")
    assert p.candidates() == ["b", "c"]


def test_forget_frees_the_place() -> None:
    p = _placement(a=1)
    p.begin("a")
    p.placed("a", "s1")
    assert p.node("a").headroom == 0
    p.forget("s1")
    assert p.node("a").headroom == 1 and p.route("s1") is None


def test_failed_health_checks_lose_a_node_without_ray() -> None:
    """Two failed probes in a row (nothing listens at its URL): lost, its sessions 410."""
    async def scenario() -> tuple[str, int, dict[str, Any]]:
        cluster = Cluster(IngressConfig(node_token="x", timeouts=Timeouts(health=0.5)))
        cluster.add_node("a", f"http://127.0.0.1:{free_port()}", {"capacity": 2, "sessions": 0})
        cluster.placement.begin("a")
        cluster.placement.placed("a", "s1")
        await cluster.check_node("a")
        assert cluster.placement.node("a").state == "up"  # one failure is not a loss
        await cluster.check_node("a")
        r = await cluster.session_request("s1", "GET", "", None, 1.0)
        await cluster.aclose()
        return cluster.placement.node("a").state, r.status_code, json.loads(bytes(r.body))

    state, status, body = asyncio.run(scenario())
    assert state == "lost" and status == 410 and body["error"]["code"] == "session_lost"


def test_the_node_lost_event_is_the_servers_session_closed() -> None:
    event = lost_event("n1", "its Ray actor died")
    assert event["type"] == "error" and event["code"] == "session_closed"
    assert event["reason"] == "node_lost" and event["node"] == "n1"


def test_without_ray_the_command_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from vivify.streamer.cluster.command import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ModuleNotFoundError
    assert main(["--nodes", "1"]) == 2
    assert "pip install '.[cluster]'" in capsys.readouterr().err


# ============================================================================ on a local Ray

RAY_MISSING = "cluster mode needs Ray: pip install '.[cluster]'"


@dataclass
class LiveCluster:
    url: str
    cluster: Cluster
    pool: Any
    loop: asyncio.AbstractEventLoop

    def http(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=20, trust_env=False)

    def node_url(self, name: str) -> str:
        return self.cluster.placement.node(name).url

    def node_http(self) -> httpx.Client:
        return httpx.Client(headers={"authorization": f"Bearer {self.cluster.config.node_token}"},
                            timeout=20, trust_env=False)

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCluster]:
    """Two nodes: n0 admits 3 sessions, n1 admits 1 (fixed, so no capacity probe runs), behind
    the ingress on a loopback port. Health polls are slow on purpose (the tests refresh the
    ingress's view themselves), so a stale view can be staged; node death is heard from Ray."""
    import uvicorn

    from vivify.streamer.cluster.ingress import create_ingress
    from vivify.streamer.cluster.node import NodeSpec
    from vivify.streamer.cluster.pool import RayNodePool

    ray = pytest.importorskip("ray", reason=RAY_MISSING)  # the tests above run without it
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
             log_to_driver=False, configure_logging=False)
    node_token = "node-secret"
    env = {"VIVIFY_IDLE_TIMEOUT": "0", "VIVIFY_WORKERS": "1"}
    logs = str(tmp_path_factory.mktemp("nodes"))
    specs = [NodeSpec("n0", node_token, dict(env, VIVIFY_MAX_SESSIONS="3"), log_dir=logs),
             NodeSpec("n1", node_token, dict(env, VIVIFY_MAX_SESSIONS="1"), log_dir=logs)]
    port = free_port()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        pool = RayNodePool(specs, gpus=False)
        cluster = Cluster(IngressConfig(token=TOKEN, node_token=node_token,
                                        health_interval_s=3600.0), pool)
        try:
            for info in await pool.start():
                cluster.add_node(info["name"], info["url"], info["health"], info["pid"])
            cluster.start_monitoring()
            server = uvicorn.Server(uvicorn.Config(create_ingress(cluster, static=False),
                                                   host="127.0.0.1", port=port,
                                                   log_level="warning"))
            state.update(cluster=cluster, pool=pool, server=server,
                         loop=asyncio.get_running_loop())
            task = asyncio.create_task(server.serve())
            while not server.started and not task.done():  # noqa: ASYNC110 - a flag
                await asyncio.sleep(0.02)
            ready.set()
            await task
        except BaseException as exc:
            state["error"] = exc
            ready.set()
        finally:
            await pool.stop(limit_s=10)
            await cluster.aclose()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(120), "the cluster did not start in 120 s"
        if "error" in state:
            raise state["error"]
        yield LiveCluster(f"http://127.0.0.1:{port}", state["cluster"], state["pool"],
                          state["loop"])
    finally:
        if "server" in state:
            state["server"].should_exit = True
        thread.join(timeout=30)
        ray.shutdown()


def _refresh(live: LiveCluster) -> None:
    for name in ("n0", "n1"):
        live.call(live.cluster.check_node(name))


def _create(http: httpx.Client) -> dict[str, Any]:
    r = http.post("/v1/sessions", json=BROADCAST)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def _delete_all(live: LiveCluster, http: httpx.Client) -> None:
    for sid in list(live.cluster.placement.owner):
        http.delete(f"/v1/sessions/{sid}")
    _refresh(live)


def test_the_ingress_asks_for_the_same_token(live: LiveCluster) -> None:
    with live.http(token=None) as anon, live.http(token="wrong") as wrong:
        assert anon.post("/v1/sessions", json=BROADCAST).status_code == 401
        assert wrong.get("/v1/cluster/nodes").status_code == 401
    with live.http() as http:
        nodes = http.get("/v1/cluster/nodes").json()["nodes"]
    assert {n["name"]: n["capacity"] for n in nodes} == {"n0": 3, "n1": 1}
    assert all(n["state"] == "up" for n in nodes)


def test_sessions_go_where_the_headroom_is_and_their_routes_follow(live: LiveCluster) -> None:
    with live.http() as http, live.node_http() as node:
        placed = [_create(http) for _ in range(3)]
        # n0 3 vs n1 1 → n0; 2 vs 1 → n0; 1 vs 1, n1 has fewer sessions → n1
        assert [s["node"] for s in placed] == ["n0", "n0", "n1"]
        for s in placed:
            assert http.get(f"/v1/sessions/{s['id']}").json()["mode"] == "broadcast"
            other = "n1" if s["node"] == "n0" else "n0"
            assert node.get(f"{live.node_url(s['node'])}/v1/sessions/{s['id']}").status_code == 200
            assert node.get(f"{live.node_url(other)}/v1/sessions/{s['id']}").status_code == 404
        # the WebSocket reaches the owning node's session: its stats are that session's
        from websockets.sync.client import connect

        ws_url = live.url.replace("http", "ws") + f"/v1/sessions/{placed[2]['id']}/ws"
        with connect(ws_url, additional_headers={"authorization": f"Bearer {TOKEN}"},
                     proxy=None, open_timeout=10) as ws:
            ws.send(json.dumps({"type": "stats"}))
            event = json.loads(ws.recv(timeout=10))
            assert event["type"] == "stats" and event["mode"] == "broadcast"
            ws.send(b"\x00\x00" * 1600)  # 0.1 s of PCM: binary passes too
        assert http.delete(f"/v1/sessions/{placed[0]['id']}").status_code == 204
        assert http.get(f"/v1/sessions/{placed[0]['id']}").status_code == 404
        assert node.get(f"{live.node_url('n0')}/v1/sessions/{placed[0]['id']}").status_code == 404
        _delete_all(live, http)


def test_a_refusal_spills_over_to_the_next_node(live: LiveCluster) -> None:
    """n1 filled behind the ingress's back (its view is stale): the session it is offered
    first is refused with 503, and lands on n0 instead, in the same request."""
    _refresh(live)
    with live.http() as http, live.node_http() as node:
        direct = node.post(f"{live.node_url('n1')}/v1/sessions", json=BROADCAST)
        assert direct.status_code == 201, direct.text
        first = [_create(http)["node"] for _ in range(2)]
        assert first == ["n0", "n0"]  # n0: 1 left, n1 (so the ingress thinks): 1, 0 sessions
        refused = live.cluster.placement.node("n1").refused_total
        spilled = _create(http)
        assert spilled["node"] == "n0"
        assert live.cluster.placement.node("n1").refused_total == refused + 1
        full = http.post("/v1/sessions", json=BROADCAST)
        assert full.status_code == 503 and full.headers["retry-after"] == "1"
        assert full.json()["error"]["code"] == "server_full"
        node.delete(f"{live.node_url('n1')}/v1/sessions/{direct.json()['id']}")
        _delete_all(live, http)


def test_a_drained_node_keeps_its_sessions_and_gets_no_new_ones(live: LiveCluster) -> None:
    with live.http() as http:
        kept = _create(http)
        assert kept["node"] == "n0"
        r = http.post("/v1/cluster/nodes/n0/drain")
        assert r.status_code == 200 and r.json()["state"] == "draining"
        assert _create(http)["node"] == "n1"
        assert http.post("/v1/sessions", json=BROADCAST).status_code == 503  # n1 is full
        assert http.get(f"/v1/sessions/{kept['id']}").status_code == 200  # still served
        assert http.post("/v1/cluster/nodes/nope/drain").status_code == 404
        assert http.post("/v1/cluster/nodes/n0/resume").json()["state"] == "up"
        _delete_all(live, http)


def test_sessions_that_end_on_their_node_leave_the_routing_table(live: LiveCluster) -> None:
    """A session ended behind the ingress's back (here: deleted on its node) is forgotten at
    the node's next health answer, and its routes say 404."""
    with live.http() as http, live.node_http() as node:
        s = _create(http)
        assert node.delete(f"{live.node_url(s['node'])}/v1/sessions/{s['id']}").status_code == 204
        _refresh(live)
        assert live.cluster.placement.route(s["id"]) is None
        assert http.get(f"/v1/sessions/{s['id']}").status_code == 404


def test_a_lost_node_ends_its_sessions_and_the_rest_go_on(live: LiveCluster) -> None:
    """Kill n1's actor (its server dies with it): its WebSocket client hears session_closed
    with reason node_lost, its session answers 410, new sessions go to n0; nothing hangs."""
    from websockets.sync.client import connect

    _refresh(live)
    with live.http() as http:
        http.post("/v1/cluster/nodes/n0/drain")
        on_n1 = _create(http)
        http.post("/v1/cluster/nodes/n0/resume")
        assert on_n1["node"] == "n1"
        ws_url = live.url.replace("http", "ws") + f"/v1/sessions/{on_n1['id']}/ws"
        with connect(ws_url, additional_headers={"authorization": f"Bearer {TOKEN}"},
                     proxy=None, open_timeout=10) as ws:
            wait_until(lambda: on_n1["id"] in live.cluster.bridges, 10, "the bridge")
            live.pool.kill("n1")
            event = json.loads(ws.recv(timeout=15))
            assert event["code"] == "session_closed" and event["reason"] == "node_lost"
            assert event["node"] == "n1"
            with contextlib.suppress(Exception):
                ws.recv(timeout=5)
            assert ws.close_code == 1011
        gone = http.get(f"/v1/sessions/{on_n1['id']}")
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "session_lost"
        assert _create(http)["node"] == "n0"
        nodes = {n["name"]: n for n in http.get("/v1/cluster/nodes").json()["nodes"]}
        assert nodes["n1"]["state"] == "lost" and nodes["n0"]["state"] == "up"
        late = connect(ws_url, additional_headers={"authorization": f"Bearer {TOKEN}"},
                       proxy=None, open_timeout=10)
        with late:
            assert json.loads(late.recv(timeout=5))["reason"] == "node_lost"
        _delete_all(live, http)

