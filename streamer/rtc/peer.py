"""WebRTC peer connections as this project makes them, on the server and in its clients.

Every reach into aiortc's internals lives here, so an aiortc upgrade has one file to check.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RtpPacket

log = logging.getLogger(__name__)


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


class PassThroughAudioBuffer:
    """aiortc's jitter-buffer interface for audio that holds nothing back.

    Every Opus RTP packet is a whole frame, yet aiortc's buffer hands a packet on only once a
    newer one has arrived (20 ms), and with its prefetch of 4 once four have (80 ms); a lost
    packet even stalls it until 16 more have come (320 ms). This one passes each packet to the
    decoder as it arrives and drops duplicates and packets older than one already passed (the
    decoder then sees a gap, as for a lost packet). Reordering is rare on loopback and LANs;
    where it is not, ``--audio-prefetch N`` keeps aiortc's buffer with ``N`` packets.
    """

    capacity = 1

    def __init__(self) -> None:
        self._last: int | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._last is not None:
            ahead = (seq - self._last) & 0xFFFF
            if ahead == 0 or ahead >= 0x8000:  # a duplicate, or older than one passed on
                return False, None
        self._last = seq
        return False, JitterFrame(data=getattr(packet, "_data", b""), timestamp=packet.timestamp)


def shorten_audio_jitter_buffer(pc: RTCPeerConnection, track: MediaStreamTrack,
                                 frames: int) -> None:
    """Release incoming audio after ``frames`` later packets, not aiortc's fixed 4; with 0,
    as each packet arrives (:class:`PassThroughAudioBuffer`).

    aiortc's audio receiver holds every Opus packet until 4 newer ones have arrived: 80 ms
    added to speech onset → mouth, the largest single item in our latency budget. A shorter
    prefetch tolerates less reordering; on loopback and LANs there is none, and a packet that
    comes too late is dropped like a lost one. aiortc has no public knob for this, so the
    attribute is set where it exists and left alone (with a log line) where it does not.
    """
    for receiver in pc.getReceivers():
        if receiver.track is not track:
            continue
        attribute = "_RTCRtpReceiver__jitter_buffer"
        buffer = getattr(receiver, attribute, None)
        if buffer is None or not hasattr(buffer, "_prefetch"):
            log.info("aiortc's audio jitter buffer is not reachable: prefetch left as is")
        elif frames == 0:
            setattr(receiver, attribute, PassThroughAudioBuffer())
        else:
            buffer._prefetch = frames


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Also call ``callback`` when the remote side asks ``sender`` for a keyframe (PLI/FIR).

    aiortc handles PLI/FIR by flagging its own encoder; a sender of pre-encoded packets (the
    broadcast fan-out) has none, so the request would be lost. aiortc has no public hook: its
    ``_send_keyframe`` is wrapped where it exists and left alone (with a log line) where not.
    """
    original = getattr(sender, "_send_keyframe", None)
    if original is None:
        log.info("aiortc's keyframe requests are not reachable: only periodic keyframes")
        return

    def send_keyframe() -> None:
        original()
        callback()

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]
