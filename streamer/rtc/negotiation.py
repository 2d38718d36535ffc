"""Answering a browser's SDP offer with the avatar's tracks, in the codec the session streams.

Every way an offer can be refused is a :class:`NegotiationError` with a stable ``code``
(``bad_sdp``, ``unsupported_codec``) and a message that says what to change; the server maps it
to a 400 with that code.
"""

from __future__ import annotations

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack


class NegotiationError(ValueError):
    def __init__(self, message: str, code: str = "bad_sdp") -> None:
        super().__init__(message)
        self.code = code


def prefer_codec(pc: RTCPeerConnection, codec: str) -> None:
    """Put the requested video codec first in every video transceiver's preferences."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    mime = f"video/{codec}".lower()
    preferred = [c for c in caps if c.mimeType.lower() == mime]
    others = [c for c in caps if c.mimeType.lower() != mime]
    for t in pc.getTransceivers():
        if t.kind == "video" and preferred:
            t.setCodecPreferences(preferred + [c for c in others if c.mimeType.lower()
                                               == "video/rtx"])


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


async def answer_offer(pc: RTCPeerConnection, offer: dict[str, str], video: MediaStreamTrack,
                       audio: MediaStreamTrack, codec: str, require_codec: bool = False,
                       need_audio: bool = False) -> dict[str, str]:
    """Answer ``offer`` with the avatar's video (and audio, if the offer has an audio
    section). Any offer aiortc cannot take is a ``bad_sdp`` with the reason: its parser
    raises ValueError, KeyError, IndexError, AttributeError... depending on what is wrong."""
    try:
        desc = RTCSessionDescription(sdp=offer["sdp"], type=offer["type"])
        if desc.type != "offer":
            raise ValueError("expected an SDP offer")
        await pc.setRemoteDescription(desc)
    except Exception as exc:
        raise NegotiationError(f"malformed SDP offer: {_reason(exc)}") from exc
    kinds = {t.kind for t in pc.getTransceivers()}
    if "video" not in kinds:
        raise NegotiationError("the offer has no video section: add a recvonly video "
                               "transceiver")
    if need_audio and "audio" not in kinds:
        raise NegotiationError("a mirror session needs an audio section in the offer: the "
                               "peer's microphone is what drives the avatar")
    pc.addTrack(video)
    if "audio" in kinds:  # a video-only offer gets a video-only answer
        pc.addTrack(audio)
    prefer_codec(pc, codec)
    try:
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:
        raise NegotiationError(f"cannot answer this offer: {_reason(exc)}") from exc
    sdp = pc.localDescription.sdp
    if require_codec and video_codec(sdp) != codec:
        raise NegotiationError(f"this session streams {codec} and the offer does not accept it",
                               code="unsupported_codec")
    return {"type": pc.localDescription.type, "sdp": sdp}


def video_codec(sdp: str) -> str | None:
    """The codec of the first payload type of the answer's video section, lower case."""
    lines = sdp.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("m=video"):
            parts = line.split()
            if len(parts) < 4:
                return None
            for rest in lines[i + 1:]:
                if rest.startswith("m="):
                    break
                if rest.startswith(f"a=rtpmap:{parts[3]} "):
                    return rest.split()[1].split("/")[0].lower()
    return None
