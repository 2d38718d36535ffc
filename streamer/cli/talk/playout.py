"""The speaker's side of a live call: a bounded buffer between the loop and PortAudio."""

from __future__ import annotations

import threading

SPEAKER_MAX_SECONDS = 0.25  # speaker buffer bound: latency beats completeness for a live call


class PlayoutBuffer:
    """A bounded byte FIFO between the event loop (writer) and PortAudio's callback (reader).

    Why bounded in *time*: network bursts must not turn into a speaker that plays seconds
    behind; past ``max_seconds`` the oldest audio is dropped. An underrun plays silence rather
    than blocking the audio thread.
    """

    def __init__(self, bytes_per_second: int, max_seconds: float = SPEAKER_MAX_SECONDS,
                 align: int = 2) -> None:
        self.max_bytes = int(bytes_per_second * max_seconds) // align * align
        self.align = align
        self._data = bytearray()
        self._lock = threading.Lock()
        self.dropped_bytes = 0
        self.underruns = 0

    def write(self, data: bytes) -> None:
        with self._lock:
            self._data += data
            excess = len(self._data) - self.max_bytes
            if excess > 0:
                excess = -(-excess // self.align) * self.align
                del self._data[:excess]
                self.dropped_bytes += excess

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes: what is buffered, then zeros (silence for s16)."""
        with self._lock:
            out = bytes(self._data[:n])
            del self._data[:n]
        if len(out) < n:
            if out or self.underruns == 0:
                self.underruns += 1
            out += bytes(n - len(out))
        return out

    def __len__(self) -> int:
        return len(self._data)

