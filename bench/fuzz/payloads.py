"""Hostile payloads the cases send: odd offers, a cold portrait, a decompression bomb."""

from __future__ import annotations

import io
import os
import secrets
import tempfile
from pathlib import Path


async def make_offer(kinds: str) -> str:
    """A real aiortc recvonly offer ("av": audio + video, "v": video only), its candidates
    stripped: the probe talks to 127.0.0.1 only, and an offer needs no candidates to be
    answered. No STUN server (aiortc's default would query one on the internet). "av" is the
    API client's broadcast offer; "v", which no client mode makes, is built here."""
    from vivify.streamer.client import offer_peer
    from vivify.streamer.rtc.peer import new_peer_connection

    if "a" in kinds:
        pc = offer_peer("broadcast")
    else:
        pc = new_peer_connection(())
        pc.addTransceiver("video", direction="recvonly")
    try:
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
    finally:
        await pc.close()
    lines = [ln for ln in sdp.split("\r\n")
             if not ln.startswith(("a=candidate:", "a=end-of-candidates"))]
    return "\r\n".join(lines)


def without_codecs(sdp: str) -> str:
    """The offer with every codec gone: no rtpmap/fmtp/rtcp-fb, no payload types in m=."""
    out = []
    for ln in sdp.split("\r\n"):
        if ln.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")):
            continue
        out.append(" ".join(ln.split(" ")[:3]) if ln.startswith("m=") else ln)
    return "\r\n".join(out)


def with_bad_candidate(sdp: str) -> str:
    """The offer with a malformed ``a=candidate:`` line in its first media section."""
    lines = sdp.split("\r\n")
    at = next(i for i, ln in enumerate(lines) if ln.startswith("a=mid:"))
    lines.insert(at + 1, "a=candidate:bogus 1 udp not-a-priority 999.1.1.1 x typ nothing")
    return "\r\n".join(lines)


def new_face_png() -> bytes:
    """A portrait the server has never seen (so its renderer is cold): the default avatar,
    mirrored, a few pixels changed at random."""
    import numpy as np
    from PIL import Image
    from skimage import data

    img = np.ascontiguousarray(data.astronaut()[:, ::-1])
    rng = np.random.default_rng(secrets.randbits(32))
    img[:4, :4] = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(side: int = 13000) -> bytes:
    """A ``side``² black PNG (169 MP, a few hundred KB on the wire), built once and cached in
    the temp dir: what it decodes to, not what it weighs, is the attack."""
    path = Path(tempfile.gettempdir()) / f"vivify-fuzz-{side}.png"
    if not path.exists():
        from PIL import Image

        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        Image.new("1", (side, side)).save(tmp, format="PNG", optimize=True)
        os.replace(tmp, path)
    return path.read_bytes()

