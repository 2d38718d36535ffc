"""The provenance stamp (label + watermark) and who decides whether the label is drawn."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from vivify.engines.provenance.disclosure import DisclosureConfig
from vivify.engines.provenance.stamp import ProvenanceStamp
from vivify.engines.provenance.watermark import detect_frames, session_payload
from vivify.streamer.offline.render import RenderOptions
from vivify.streamer.server.config import ServerConfig
from vivify.streamer.server.manager import SessionManager


def test_stamp_marks_and_labels(pack) -> None:
    crop = pack.crop
    plain = ProvenanceStamp("s-1")
    labelled = ProvenanceStamp("s-1", DisclosureConfig(text="AI-generated"))
    a, b = plain.apply(crop), labelled.apply(crop)
    assert np.array_equal(crop, pack.crop)  # not in place unless asked
    assert plain.info.session_hash == session_payload("s-1").session_hex
    assert plain.info.label is None and labelled.info.label == "AI-generated"
    rows, cols = labelled.label.region(*crop.shape[:2])  # type: ignore[union-attr]
    # The label changes its corner a lot; elsewhere both carry only the (identical) mark.
    assert np.abs(b[rows, cols].astype(int) - a[rows, cols]).mean() > 20
    outside = np.ones(crop.shape[:2], bool)
    outside[rows, cols] = False
    assert np.array_equal(a[outside], b[outside])
    found = detect_frames([b] * 3)
    assert found.present and found.payload is not None
    assert found.payload.session_hex == labelled.info.session_hash


def test_stamp_in_place_owns_the_frame(pack) -> None:
    frame = pack.crop.copy()
    out = ProvenanceStamp("s-2").apply(frame, inplace=True)
    assert out is frame and not np.array_equal(frame, pack.crop)


@pytest.mark.parametrize(("policy", "requested", "drawn"), [
    ("client", None, True), ("client", False, False), ("client", True, True),
    ("always", False, True), ("never", True, False), ("never", None, False),
])
def test_label_policy(policy: str, requested: bool | None, drawn: bool) -> None:
    manager = SimpleNamespace(config=ServerConfig(disclosure_label=policy))
    assert SessionManager.wants_label(manager, requested) is drawn  # type: ignore[arg-type]


def test_bad_label_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="disclosure_label"):
        ServerConfig(disclosure_label="sometimes")
    with pytest.raises(ValueError, match="text"):
        ServerConfig(label_text="")
    with pytest.raises(ValueError, match="text"):
        RenderOptions(label="two\nlines")


def test_answer_codec_is_read_from_the_video_section() -> None:
    from vivify.streamer.rtc.negotiation import video_codec as _video_codec

    sdp = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
           "m=video 9 UDP/TLS/RTP/SAVPF 102 97\r\na=rtpmap:97 VP8/90000\r\n"
           "a=rtpmap:102 H264/90000\r\n")
    assert _video_codec(sdp) == "h264"
    assert _video_codec(sdp.replace("102 97", "97 102")) == "vp8"
    assert _video_codec("v=0\r\nm=audio 9 X 0\r\n") is None
