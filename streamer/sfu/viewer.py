"""A viewer of a broadcast through Janus, in Python: what the watch page does, on aiortc.

The tests and ``bench/cluster_janus.py`` use it; a Python client could too. It reads the
``sfu`` block of the session's JSON (``{"url", "room", "feed"}``), opens its own Janus API
session, and subscribes to the feed: Janus makes the offer, this peer answers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from aiortc import RTCPeerConnection

from vivify.streamer.rtc.peer import new_peer_connection
from vivify.streamer.sfu.janus import JanusHandle, JanusSession
from vivify.streamer.sfu.videoroom import subscribe


class JanusViewer:
    """``viewer = await JanusViewer.open(session_json["sfu"])``; its ``pc`` gets the tracks.

    Register ``pc``'s track handlers before the answer goes out: pass ``on_pc``, which is
    called with the new peer connection before subscribing.
    """

    def __init__(self, janus: JanusSession, handle: JanusHandle, pc: RTCPeerConnection) -> None:
        self.janus = janus
        self.handle = handle
        self.pc = pc

    @classmethod
    async def open(cls, sfu: dict[str, Any], ice_servers: tuple[str, ...] = (),
                   on_pc: Callable[[RTCPeerConnection], None] | None = None,
                   ) -> JanusViewer:
        janus = await JanusSession.create(str(sfu["url"]))
        pc = new_peer_connection(ice_servers)
        try:
            handle = await janus.attach()
            if on_pc is not None:
                on_pc(pc)
            await subscribe(handle, int(sfu["room"]), int(sfu["feed"]), pc)
        except BaseException:
            with contextlib.suppress(Exception):
                await pc.close()
            await janus.aclose()
            raise
        return cls(janus, handle, pc)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.pc.close()
        await self.handle.detach()
        await self.janus.aclose()
