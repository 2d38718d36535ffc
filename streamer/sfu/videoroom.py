"""Janus VideoRoom as Vivify uses it: one room per broadcast, one publisher, any subscribers.

The WebRTC side is aiortc's ``RTCPeerConnection``; aiortc gathers its candidates before
``setLocalDescription`` returns, so every SDP sent to Janus is complete and marked
``trickle: false`` (no trickle messages to send). Janus answers a publisher's offer and makes
the offer for a subscriber (its candidates in the SDP: Janus half-trickles by default).

A room is made ``publishers = 1``: once the avatar publishes, nobody else can publish into
the room a viewer was given, whoever learns its number. Rooms are private (not listed) and
carry a random ``secret`` that only the server holds, so only it can destroy them.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from aiortc import RTCPeerConnection, RTCSessionDescription

from vivify.streamer.sfu.janus import JanusError, JanusHandle

Codec = Literal["vp8", "h264"]


@dataclass(frozen=True)
class RoomSpec:
    """What the server asks of Janus for one broadcast."""

    codec: Codec = "vp8"
    bitrate: int = 1_500_000  # bit/s Janus tells the publisher at most (REMB cap)
    fir_freq: int = 2  # s between keyframe requests Janus sends the publisher
    description: str = "vivify broadcast"
    secret: str = field(default_factory=lambda: secrets.token_hex(16))


def _jsep(pc: RTCPeerConnection) -> dict[str, Any]:
    desc = pc.localDescription
    return {"type": desc.type, "sdp": desc.sdp, "trickle": False}


async def create_room(handle: JanusHandle, spec: RoomSpec, admin_key: str | None) -> int:
    """A new private room with a number Janus picks; the room's number."""
    body: dict[str, Any] = {
        "request": "create", "description": spec.description, "is_private": True,
        "publishers": 1, "videocodec": spec.codec, "audiocodec": "opus",
        "bitrate": spec.bitrate, "fir_freq": spec.fir_freq, "secret": spec.secret,
        "permanent": False, "notify_joining": False,
    }
    if admin_key:
        body["admin_key"] = admin_key
    data = await handle.request(body)
    if data.get("videoroom") != "created":
        raise JanusError(f"create room: unexpected answer {data}")
    return int(data["room"])


async def destroy_room(handle: JanusHandle, room: int, secret: str) -> None:
    await handle.request({"request": "destroy", "room": room, "secret": secret})


async def publish(handle: JanusHandle, room: int, pc: RTCPeerConnection,
                  display: str = "avatar", timeout_s: float = 10.0) -> int:
    """Join ``room`` as its publisher and send ``pc``'s tracks; the feed id viewers ask for.

    ``pc`` must already hold its outgoing tracks. Returns once the connection to Janus is up
    (``webrtcup``): before that, Janus refuses subscribers to the feed ("No such feed").
    """
    data, _ = await handle.message({"request": "join", "ptype": "publisher", "room": room,
                                    "display": display})
    if data.get("videoroom") != "joined":
        raise JanusError(f"join as publisher: unexpected answer {data}")
    feed = int(data["id"])
    await pc.setLocalDescription(await pc.createOffer())
    data, answer = await handle.message({"request": "publish", "audio": True, "video": True},
                                        jsep=_jsep(pc))
    if answer is None or data.get("configured") != "ok":
        raise JanusError(f"publish: Janus did not accept the offer ({data})")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    await wait_for_event(handle, "webrtcup", timeout_s)
    return feed


async def wait_for_event(handle: JanusHandle, kind: str, timeout_s: float) -> dict[str, Any]:
    """The handle's next ``kind`` event (``webrtcup``: ICE and DTLS are done); a ``hangup``
    or a lost session before it is a :class:`JanusError`."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                event = await handle.events.get()
                if event.get("janus") == kind:
                    return event
                if event.get("janus") in ("hangup", "lost", "detached"):
                    raise JanusError(f"waiting for {kind}: {event.get('reason', 'hung up')}")
    except TimeoutError:
        raise JanusError(f"no {kind} from Janus within {timeout_s:g} s") from None


async def subscribe(handle: JanusHandle, room: int, feed: int, pc: RTCPeerConnection) -> None:
    """Receive ``feed`` of ``room`` on ``pc``: Janus offers, ``pc`` answers, Janus starts."""
    data, offer = await handle.message({"request": "join", "ptype": "subscriber", "room": room,
                                        "streams": [{"feed": feed}]})
    if offer is None or data.get("videoroom") != "attached":
        raise JanusError(f"join as subscriber: unexpected answer {data}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
    await pc.setLocalDescription(await pc.createAnswer())
    data, _ = await handle.message({"request": "start"}, jsep=_jsep(pc))
    if data.get("started") != "ok":
        raise JanusError(f"start: unexpected answer {data}")
