"""WebRTC peer connections as this project makes them, on the server and in its clients."""

from __future__ import annotations

import os

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection


def ice_servers_from_env() -> tuple[str, ...]:
    """``VIVIFY_ICE_SERVERS``: comma-separated STUN/TURN URLs (clients read it too)."""
    return tuple(u for u in os.environ.get("VIVIFY_ICE_SERVERS", "").split(",") if u)


def new_peer_connection(ice_servers: tuple[str, ...]) -> RTCPeerConnection:
    """A peer connection that gathers candidates only where the operator said.

    aiortc's default (no configuration) asks Google's public STUN server, from every server
    and for every session: traffic to a third party nobody configured, and on a closed network
    a lookup that can only fail. With no ICE servers the server offers its host candidates,
    which is what a server with a reachable address needs; ``--ice-server`` adds STUN/TURN.
    """
    return RTCPeerConnection(RTCConfiguration(iceServers=[RTCIceServer(urls=u)
                                                          for u in ice_servers]))
