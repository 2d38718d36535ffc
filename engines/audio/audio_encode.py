"""Audio out: a whole clip through one PyAV encoder (the reverse of ``audio_io``, for tools).

Used where a clip is encoded at once, not streamed: the Opus round-trip of the training
augmentations and the encoded files the tests make. Live sessions encode in aiortc, and the
offline renderer in :mod:`vivify.streamer.offline.video_writer`, which writes as it goes.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the caller has opened the container, so PyAV is loaded by then
    import av
    import av.container

__all__ = ["encode_clip"]


def encode_clip(container: av.container.OutputContainer, stream: av.AudioStream,
                planes: np.ndarray, rate: int, *, fmt: str, layout: str) -> None:
    """Encode ``planes`` (channels × samples) at ``rate`` into ``stream`` and mux every packet.

    The clip goes in as one frame at pts 0: the encoder cuts it into its own frame size. The
    encoder is then flushed (``encode(None)``), so the samples it still holds for its look-ahead
    reach the file and the tail of the clip is not lost.
    """
    import av

    frame = av.AudioFrame.from_ndarray(planes, format=fmt, layout=layout)
    frame.sample_rate = rate
    frame.pts = 0
    frame.time_base = Fraction(1, rate)
    for packet in [*stream.encode(frame), *stream.encode(None)]:
        container.mux(packet)
