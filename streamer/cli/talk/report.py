"""What a call tells the user: the live status line, the final report and its summary."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vivify.streamer.cli.talk.errors import EXIT_OK


@dataclass
class ReceiveStats:
    """What the status line and the final summary report; fed from the receiving tasks."""

    started: float = field(default_factory=time.monotonic)
    video_times: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    video_frames: int = 0
    size: tuple[int, int] | None = None
    audio_seconds: float = 0.0
    rtt_ms: float | None = None

    def on_video(self, width: int, height: int) -> None:
        self.video_frames += 1
        self.video_times.append(time.monotonic())
        self.size = (width, height)

    def fps(self, window: float | None = None) -> float | None:
        """Frames per second over the last ``window`` seconds, or the steady rate when ``None``.

        The steady rate leaves out the first second: frames queued while ICE and DTLS were
        being set up arrive in one burst and would overstate it.
        """
        times = list(self.video_times)
        if window is not None:
            times = [t for t in times if t >= time.monotonic() - window]
        elif times and times[-1] - times[0] > 2.0:
            times = [t for t in times if t >= times[0] + 1.0]
        if len(times) < 2 or times[-1] <= times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])

    def line(self) -> str:
        fps = self.fps(2.0)
        size = f"{self.size[0]}×{self.size[1]}" if self.size else "–"
        rtt = f"{self.rtt_ms:.0f} ms" if self.rtt_ms is not None else "–"
        return (f"{time.monotonic() - self.started:6.1f} s │ video "
                f"{fps if fps is not None else 0:5.1f} fps {size} │ audio "
                f"{self.audio_seconds:6.1f} s │ rtt {rtt}")


@dataclass
class TalkReport:
    session: str | None = None
    reason: str = ""
    exit_code: int = EXIT_OK
    video_frames: int = 0
    fps: float | None = None
    size: tuple[int, int] | None = None
    audio_seconds: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    saved: Path | None = None
    saved_frames: int = 0

    def summary(self) -> str:
        size = f"{self.size[0]}×{self.size[1]}" if self.size else "no video"
        fps = f"{self.fps:.1f} fps" if self.fps else "– fps"
        parts = [f"session {self.session or '–'} ended: {self.reason}",
                 f"received {self.video_frames} video frames ({fps}, {size}) and "
                 f"{self.audio_seconds:.1f} s of audio"]
        finished = [e for e in self.events if e.get("type") == "playback_finished"]
        if finished:
            parts.append(f"playback_finished at {finished[-1].get('position_ms')} ms"
                         f"{' (interrupted)' if finished[-1].get('interrupted') else ''}")
        if self.saved:
            parts.append(f"saved {self.saved} ({self.saved_frames} frames)")
        return "; ".join(parts)



def is_tty() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def status_printer() -> Callable[[str], None]:
    """Status lines go to stderr: one line rewritten in place on a terminal, else appended."""
    tty = is_tty()

    def show(line: str) -> None:
        if tty:
            print(f"\r\x1b[2K{line}", end="" if "│" in line else "\n", file=sys.stderr,
                  flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    return show
