"""Provenance stamp: the one step every generated frame goes through before it leaves us.

A frame is stamped once, last, after rendering and paste-back: the optional visible
"AI-generated" label first (so the label is marked too), then the invisible watermark
carrying the product tag and a hash of the session id (:mod:`vivify.engines.provenance.watermark`).
The
offline renderer and the streaming server both call :meth:`ProvenanceStamp.apply`; nothing
else in the code base marks frames, so there is no path that ships an unmarked frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vivify.engines.provenance.disclosure import DisclosureConfig, DisclosureLabel
from vivify.engines.provenance.watermark import Watermarker, session_payload


@dataclass(frozen=True)
class ProvenanceInfo:
    """What the stamp says, for logs, metadata tags and API responses."""

    session_id: str
    session_hash: str  # the 32-bit hash the watermark carries, as 8 hex digits
    label: str | None  # the visible label text, or None when no label is drawn


class ProvenanceStamp:
    """Label (optional) + watermark for the frames of one session or one offline render."""

    def __init__(self, session_id: str, label: DisclosureConfig | None = None) -> None:
        payload = session_payload(session_id)
        self.watermark = Watermarker(payload)
        self.label = DisclosureLabel(label) if label is not None else None
        self.info = ProvenanceInfo(session_id=session_id, session_hash=payload.session_hex,
                                   label=label.text if label is not None else None)

    def apply(self, frame: np.ndarray, *, inplace: bool = False) -> np.ndarray:
        """Return the stamped frame; ``inplace`` only when the caller owns ``frame``."""
        out = frame if inplace else frame.copy()
        if self.label is not None:
            self.label.apply(out, inplace=True)
        return self.watermark.apply(out, inplace=True)


__all__ = ["ProvenanceInfo", "ProvenanceStamp"]
