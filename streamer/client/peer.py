"""The peer connection a client offers, per session mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection
    from aiortc.mediastreams import MediaStreamTrack

MODES = ("mirror", "presenter", "broadcast", "viewer")


def offer_peer(mode: str, audio_track: MediaStreamTrack | None = None, *,
               ice_servers: tuple[str, ...] = ()) -> RTCPeerConnection:
    """A peer connection with the transceivers ``mode`` needs, ready for
    :meth:`~vivify.streamer.client.api.ApiClient.create_session` (which makes the offer).

    ``mirror``: ``audio_track`` is sent (the microphone that drives the avatar) and the avatar's
    video comes back; the answer's audio is that same speech, paired with the frames.
    ``presenter``, ``broadcast``, ``viewer``: receive-only audio and video. Every mode needs the
    video section (the server refuses an offer without one). ICE gathers only ``ice_servers``
    (none: host candidates), never aiortc's default public STUN server — see
    :func:`~vivify.streamer.rtc.peer.new_peer_connection`. Register ``pc.on("track")`` before
    the answer is applied, or read ``pc.getReceivers()`` after.
    """
    from vivify.streamer.rtc.peer import new_peer_connection

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "mirror" and audio_track is None:
        raise ValueError("a mirror session sends audio: pass audio_track")
    pc = new_peer_connection(ice_servers)
    if mode == "mirror" and audio_track is not None:
        pc.addTrack(audio_track)
    else:
        pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    return pc
