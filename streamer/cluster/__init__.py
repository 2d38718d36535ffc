"""Cluster mode: Vivify nodes as Ray actors behind one ingress (docs/scale-out.md).

- ``placement.py``: which node gets a new session, which node owns a session (pure logic).
- ``node.py``: the node actor, a real ``vivify serve`` in a child process.
- ``pool.py``: the node actors on Ray (imported only when used: the ``cluster`` extra).
- ``proxy.py``: HTTP and WebSocket forwarding to a node, every forward bounded.
- ``ingress.py``: the FastAPI ingress (placement, spill-over, routing, node loss, drain).
- ``command.py``: ``vivify cluster`` (``add_cluster_parser``).
"""
