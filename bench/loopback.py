"""Loopback benchmark: the real server and real aiortc peers on 127.0.0.1, measured end to end.

Run ``python bench/loopback.py`` (about 5 min) or ``python bench/loopback.py --quick`` (under
2 min). The server is ``vivify.streamer.server.serve.build`` on uvicorn in a child process (its own
GIL, as in
production; ``time.monotonic`` is system-wide on Linux, and every time this benchmark reports is
taken in the client process anyway). Results go to ``bench/results/loopback-*.json``, rewritten
after every stage, so a failed or interrupted run keeps what it measured.

Stages and method:

``mirror``
    One mirror session. The client's microphone track plays a generated signal, 2 s of silence
    then cycles of 1 s of espeak-ng speech and 1.5 s of silence (synthetic vowels when espeak-ng
    is missing), 48 kHz mono, paced by the track itself. The track logs the wall time at which it
    hands every 20 ms frame to aiortc; speech onsets are detected in the *sent* signal by energy
    (5 ms windows above −45 dBFS after ≥ 0.4 s below), and an onset's send time is the hand-off
    time of its frame. Each received video frame's arrival time and the luma of the default
    avatar's mouth box (rows 290–380, columns 190–320 of the 512² crop) are kept; mouth activity
    is the mean absolute luma change of that box from the previous frame. The idle threshold is
    calibrated on the frames that arrive in the silent parts (from 0.8 s after a burst ends to
    the next onset): ``max(median + 10 × MAD, 2.5 × p90, 1.0)``, robust to the few speech frames
    a stall pushes into those windows. Onset latency = arrival of the first frame after the
    onset was sent that begins 3 frames in a row above the threshold (frames the server held,
    exact repeats, are skipped), minus the send time. Also
    measured: ``POST /v1/sessions`` sent → first video frame, the delivered frame rate and
    inter-frame gaps (from 1 s after the first frame to the end), and the receiver's audio–video
    offset: the same energy detector finds the onsets in the *returned* audio (the server plays
    the speech back paired with its frames); offset = mouth-motion frame arrival − arrival of
    the returned audio frame holding the onset (positive: video later than audio).
``session_start``
    More short mirror sessions, each timed from the POST to its first video frame, then closed.
``interrupt``
    A broadcast session with one WebRTC viewer, driven over the WebSocket. Each repetition pushes
    a sentence, sends ``{"type": "interrupt"}`` 1.0–1.4 s after ``playback_started`` (mid
    sentence) and measures, from the send time, the first viewer frame from which the face
    looks idle and stays so (checked up to 1.2 s after the interrupt; ``first_idle_run_ms``
    also records the first run of 5 idle-looking frames, which a pause can fake). Two criteria:
    *idle match*, the mouth box (head sway aligned away by a ±6 px search) is within the idle
    range of the state the face settles into (frames 1.2–2.4 s after the interrupt), and
    *still*, no motion (3 frames in a row above the idle threshold, as for onsets). Frames the
    server repeated (held) are skipped: a frozen speaking face is not an idle one.
``capacity``
    1, 2, 3, … concurrent mirror sessions (each its own peer and signal, onsets staggered), for a
    fixed time each; a level holds when every session's delivered rate is ≥ 24 fps, the pooled
    p95 onset latency is ≤ 1.5 × that of level 1 and ≤ 10 % of onsets are missed. A failing
    level is run once more; the ramp stops when it fails again, when the server answers 503,
    or when the time budget runs out. The server's own admission limit is lifted for the ramp
    (its start-up estimate is recorded). Each level keeps every session's fps per second
    (``fps_series_each``) and its onset latencies, for the report's capacity curve and CDF.
``memory`` (throughout)
    The server's RSS (VmRSS; one process, its workers are threads) every 0.5 s: per capacity
    level (median/max), the first session on the fresh server (mirror stage), the slope of RSS
    against sessions over the ramp (``rss_per_session_mib``) and the whole series
    (``memory.rss_series``). Long-run flatness is bench/soak.py's job.

The server child inherits the environment, so ``OPENBLAS_NUM_THREADS=1 python
bench/loopback.py`` measures the server with single-threaded BLAS (recorded in
``machine.thread_env``): on the 2-core VM that cut the server's CPU per session about 3×.

All peers, the senders and the receivers run in this one process, on the same cores as the
server: the figures include the client's Opus/VP8 work, which a remote browser would not add.
Every stage records the CPU that *other* programs took meanwhile (``cpu.cores_others``, from
/proc): on a shared VM that, not the server, is often what moves the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import fractions
import json
import math
import os
import platform
import queue
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"

SEND_RATE = 48_000  # Hz: the microphone track's rate (what a browser sends to Opus)
SEND_FRAME = SEND_RATE // 50  # 960 samples = 20 ms per frame handed to aiortc
WS_RATE = 16_000  # Hz: PCM s16le mono over the WebSocket
MOUTH_BOX = (290, 380, 190, 320)  # rows, columns of the mouth in the default avatar's 512² crop
LEAD_S = 2.0  # silence before the first onset: session start and idle calibration
SPEECH_S = 1.0
SILENCE_S = 1.5
ONSET_DB = -45.0  # dBFS: energy-detector level
ONSET_WIN_S = 0.005
ONSET_GAP_S = 0.4  # silence needed before an onset counts
IDLE_SETTLE_S = 0.8  # after a burst ends, frames this much later count as idle
MOTION_SEARCH_S = SPEECH_S + 0.5  # look this long after an onset for the mouth to move
MOTION_RUN = 3  # frames in a row above the threshold: the mouth moves (a one-frame glitch
#                makes two high differences, in and out)
ALIGN_MARGIN = 6  # px of head sway searched when comparing a mouth with the idle one
SETTLED_S = (1.2, 2.4)  # after an interrupt: the face has settled into idle in this window
HELD = 1e-3  # activity below this: an exact repeat of the previous frame (a held frame)
IDLE_RUN = 5  # frames in a row that must look idle after an interrupt
FPS_FLOOR = 24.0
ONSET_GROWTH = 1.5  # capacity: p95 onset may grow to this × the single-session value
PHRASES = ("hello there", "my name is Peter", "bottle of milk", "one two three",
           "good morning", "how are you", "see you later", "thank you")
SENTENCE = ("Hello there. My name is Peter, and I bought a bottle of milk at the shop on the "
            "corner, because we had run out of it this morning.")

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "OPENCV_FOR_THREADS_NUM")  # recorded: BLAS threading changes the server's CPU 3×

_T0 = time.monotonic()


def log(stage: str, message: str) -> None:
    """One progress line on stderr, with the time since the benchmark started."""
    print(f"[{time.monotonic() - _T0:6.1f} s] {stage}: {message}", file=sys.stderr, flush=True)


# ============================================================================ signals


def _resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Linear-interpolation resampling (enough for test speech)."""
    if src == dst:
        return x.astype(np.float32)
    n = round(x.size * dst / src)
    return np.interp(np.arange(n) * (src / dst), np.arange(x.size), x).astype(np.float32)


def espeak(text: str, rate: int) -> np.ndarray | None:
    """``text`` spoken by espeak-ng as float32 mono at ``rate``; None without espeak-ng."""
    if shutil.which("espeak-ng") is None:
        return None
    import wave

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(path), text],
                       check=True, capture_output=True, timeout=60)
        with wave.open(str(path), "rb") as w:
            src = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return _resample(pcm.astype(np.float32) / 32768.0, src, rate)


def synthetic_vowels(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Voice-like stand-in for speech: 120 Hz harmonics, formant-weighted, 4 Hz syllables."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    f1, f2 = rng.uniform(500, 800), rng.uniform(1000, 2000)
    x = np.zeros_like(t)
    for h in range(1, 30):
        f = 120.0 * h
        if f > rate / 2 - 200:
            break
        gain = math.exp(-((f - f1) / 300) ** 2) + 0.5 * math.exp(-((f - f2) / 400) ** 2) + 0.05
        x += gain * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t - np.pi / 2)
    return (x * envelope).astype(np.float32)


def _level(x: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale to RMS ``dbfs`` (0 dBFS = RMS 1.0), peaks limited to 0.95."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) or 1.0
    y = x * (10 ** (dbfs / 20) / rms)
    peak = float(np.abs(y).max())
    return (y * (0.95 / peak) if peak > 0.95 else y).astype(np.float32)


def speech_clips(rate: int, seconds: float = SPEECH_S, dbfs: float = -18.0) -> list[np.ndarray]:
    """Bursts of exactly ``seconds``, each starting at its first voiced sample, levelled."""
    clips: list[np.ndarray] = []
    n = round(seconds * rate)
    fade = np.linspace(1.0, 0.0, round(0.01 * rate), dtype=np.float32)
    for i, phrase in enumerate(PHRASES):
        x = espeak(phrase, rate)
        if x is None:
            x = synthetic_vowels(seconds, rate, seed=i)
        onsets = detect_onsets(x, rate, gap_s=0.0)
        x = x[onsets[0]:] if onsets else x
        x = np.concatenate([x, np.zeros(max(0, n - x.size), np.float32)])[:n]
        x[-fade.size:] *= fade
        clips.append(_level(x, dbfs))
    return clips


def cycle_signal(seconds: float, rate: int, clips: Sequence[np.ndarray], lead_s: float = LEAD_S,
                 silence_s: float = SILENCE_S) -> tuple[np.ndarray, list[int]]:
    """``lead_s`` of silence, then burst/silence cycles for ``seconds``; returns the signal and
    where each burst was placed (sample indices)."""
    total = round(seconds * rate)
    out = np.zeros(total, np.float32)
    starts: list[int] = []
    pos = round(lead_s * rate)
    k = 0
    while pos + clips[k % len(clips)].size <= total:
        clip = clips[k % len(clips)]
        out[pos:pos + clip.size] = clip
        starts.append(pos)
        pos += clip.size + round(silence_s * rate)
        k += 1
    return out, starts


def detect_onsets(x: np.ndarray, rate: int, threshold_db: float = ONSET_DB,
                  gap_s: float = ONSET_GAP_S, win_s: float = ONSET_WIN_S) -> list[int]:
    """Sample indices where the signal's energy rises above ``threshold_db`` after at least
    ``gap_s`` below it (the start of the signal counts as below). Resolution: ``win_s``."""
    win = max(1, round(win_s * rate))
    n = x.size // win
    if n == 0:
        return []
    frames = np.asarray(x[:n * win], np.float64).reshape(n, win)
    level = 10 * np.log10(np.mean(frames * frames, axis=1) + 1e-20)
    loud = level > threshold_db
    need = round(gap_s / win_s)
    onsets: list[int] = []
    quiet_run = need  # the signal starts "after silence"
    for i, is_loud in enumerate(loud):
        if is_loud:
            if quiet_run >= need:
                onsets.append(i * win)
            quiet_run = 0
        else:
            quiet_run += 1
    return onsets


# ============================================================================ video analysis


def mouth_luma(frame: Any) -> np.ndarray:
    """The mouth box of a decoded ``av.VideoFrame`` as float32 luma (no RGB conversion)."""
    r0, r1, c0, c1 = MOUTH_BOX
    if frame.format.name in ("yuv420p", "yuvj420p", "nv12"):
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        return luma[r0:r1, c0:c1].astype(np.float32)
    return frame.to_ndarray(format="gray")[r0:r1, c0:c1].astype(np.float32)


def mouth_activity(crops: Sequence[np.ndarray]) -> np.ndarray:
    """Mean absolute change of each mouth crop from the previous one (0 for the first)."""
    out = np.zeros(len(crops), np.float64)
    for i in range(1, len(crops)):
        out[i] = float(np.abs(crops[i] - crops[i - 1]).mean())
    return out


def calibrate_threshold(idle_activity: np.ndarray, floor: float = 1.0) -> float:
    """Activity above the idle noise: ``max(median + 10 × MAD, 2.5 × p90, floor)``.

    Robust statistics, so a few speech frames that land in an "idle" window (after a stall)
    cannot inflate it; idle frames here measure ~0.4 median, ~0.6 p90, speech frames ~8."""
    a = np.asarray(idle_activity, np.float64)
    if a.size == 0:
        raise ValueError("no idle frames to calibrate on")
    med = float(np.median(a))
    mad = float(np.median(np.abs(a - med)))
    return max(med + 10 * mad, 2.5 * float(np.percentile(a, 90)), floor)


def first_above(times: np.ndarray, values: np.ndarray, threshold: float, start: float,
                end: float, run: int = MOTION_RUN) -> int | None:
    """Index of the first sample with ``start <= time <= end`` that begins ``run`` samples in a
    row above ``threshold`` (a lone idle spike does not count as motion). Exact repeats
    (value 0: the server held a frame) neither count nor break the run."""
    above = values > threshold
    held = values < HELD
    return first_run(above, times, start, run, skip=held, end=end)


def first_run(mask: np.ndarray, times: np.ndarray, start: float, run: int,
              skip: np.ndarray | None = None, end: float = math.inf) -> int | None:
    """Index of the first ``True`` with ``start <= time <= end`` that begins ``run`` ``True``s.

    Entries where ``skip`` is set (repeated frames) neither count nor break a run."""
    begin = int(np.searchsorted(times, start))
    count, first = 0, -1
    for i in range(begin, mask.size):
        if skip is not None and skip[i]:
            continue
        if mask[i]:
            if count == 0:
                if times[i] > end:
                    return None
                first = i
            count += 1
            if count == run:
                return first
        else:
            count = 0
    return None


def in_runs(mask: np.ndarray, run: int, skip: np.ndarray | None = None) -> np.ndarray:
    """Which entries belong to ``run`` or more ``True``s in a row (``skip``ped ones ignored):
    sustained motion, not a one-frame spike."""
    out = np.zeros(mask.size, bool)
    members: list[int] = []
    for i in range(mask.size + 1):
        if i < mask.size and skip is not None and skip[i]:
            continue
        if i < mask.size and mask[i]:
            members.append(i)
            continue
        if len(members) >= run:
            out[members] = True
        members = []
    return out


def idle_for_good(idle: np.ndarray, times: np.ndarray, start: float, until: float,
                  skip: np.ndarray | None = None) -> int | None:
    """Index of the first frame at or after ``start`` from which every frame up to ``until`` is
    idle (``skip``ped frames aside): when the face returned to idle and stayed there."""
    idx = [i for i in np.flatnonzero((times >= start) & (times <= until))
           if skip is None or not skip[i]]
    if not idx:
        return None
    last_busy = max((k for k, i in enumerate(idx) if not idle[i]), default=-1)
    return int(idx[last_busy + 1]) if last_busy + 1 < len(idx) else None


def aligned_distance(crop: np.ndarray, ref: np.ndarray, margin: int = ALIGN_MARGIN) -> float:
    """Mean absolute difference between ``ref``'s inner box and the best-matching window of
    ``crop`` within ±``margin`` px: the mouth's shape, with the head's sway taken out."""
    inner = ref[margin:ref.shape[0] - margin, margin:ref.shape[1] - margin]
    h, w = inner.shape
    best = math.inf
    for dy in range(2 * margin + 1):
        for dx in range(2 * margin + 1):
            best = min(best, float(np.abs(crop[dy:dy + h, dx:dx + w] - inner).mean()))
    return best


def percentiles(values: Sequence[float]) -> dict[str, Any]:
    """p50, p95, p99, min, max and n of ``values`` in ms (None when empty)."""
    v = np.asarray([x for x in values if x is not None], np.float64)
    if v.size == 0:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "min_ms": None,
                "max_ms": None}
    return {"n": int(v.size), "p50_ms": round(float(np.percentile(v, 50)), 1),
            "p95_ms": round(float(np.percentile(v, 95)), 1),
            "p99_ms": round(float(np.percentile(v, 99)), 1),
            "min_ms": round(float(v.min()), 1), "max_ms": round(float(v.max()), 1)}


def fps_series(times: Sequence[float] | np.ndarray, bin_s: float = 1.0) -> list[float]:
    """Delivered frame rate in consecutive ``bin_s`` bins from the first frame (the last,
    partial bin dropped): the "fps over time" plot, where a stall shows as a dip."""
    t = np.asarray(times, np.float64)
    if t.size < 2:
        return []
    n_bins = int((t[-1] - t[0]) // bin_s)
    if n_bins < 1:
        return []
    counts = np.bincount(((t - t[0]) // bin_s).astype(int), minlength=n_bins + 1)[:n_bins]
    return [round(float(c) / bin_s, 1) for c in counts]


def rss_mib(pid: int) -> float | None:
    """Resident set size of process ``pid`` in MiB (VmRSS from /proc); None if unreadable.
    The server is one process (its workers are threads), so this is all of its memory."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def frame_rate(times: np.ndarray, settle_s: float = 1.0) -> dict[str, Any]:
    """Delivered rate and inter-frame gaps from ``settle_s`` after the first frame."""
    t = np.asarray(times, np.float64)
    if t.size < 3:
        return {"fps": None, "gap_p95_ms": None, "gap_max_ms": None, "frames": int(t.size)}
    steady = t[t >= t[0] + settle_s]
    if steady.size < 3:
        steady = t
    gaps = np.diff(steady) * 1e3
    return {"fps": round((steady.size - 1) / (steady[-1] - steady[0]), 2),
            "gap_p50_ms": round(float(np.percentile(gaps, 50)), 1),
            "gap_p95_ms": round(float(np.percentile(gaps, 95)), 1),
            "gap_max_ms": round(float(gaps.max()), 1),
            "gaps_over_80ms": int((gaps > 80).sum()), "frames": int(steady.size),
            "seconds": round(float(steady[-1] - steady[0]), 2)}


# ============================================================================ peers


class LoggedAudioTrack(MediaStreamTrack):
    """A microphone stand-in: plays ``signal`` (48 kHz float) in 20 ms frames paced by the wall
    clock, and logs in :attr:`sent` the ``time.monotonic()`` at which frame ``k`` was handed to
    aiortc (``sent[k]``): the send time of samples ``k·960 … k·960+959``."""

    kind = "audio"

    def __init__(self, signal: np.ndarray) -> None:
        super().__init__()
        self.pcm = np.clip(np.rint(signal * 32767), -32768, 32767).astype(np.int16)
        self.sent: list[float] = []
        self._start: float | None = None
        self._time_base = fractions.Fraction(1, SEND_RATE)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        k = len(self.sent)
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + k * SEND_FRAME / SEND_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        chunk = self.pcm[k * SEND_FRAME:(k + 1) * SEND_FRAME]
        if chunk.size < SEND_FRAME:
            chunk = np.concatenate([chunk, np.zeros(SEND_FRAME - chunk.size, np.int16)])
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SEND_RATE
        frame.pts = k * SEND_FRAME
        frame.time_base = self._time_base
        self.sent.append(time.monotonic())
        return frame


class ServerRefusedError(RuntimeError):
    """The server answered a session request with something other than 201."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


@dataclass
class Peer:
    """One client peer connection: an optional logged microphone, received video and audio."""

    signal: np.ndarray | None = None
    video_t: list[float] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    audio_t: list[float] = field(default_factory=list)
    audio: list[np.ndarray] = field(default_factory=list)
    audio_rate: int = 48_000
    t_post: float | None = None
    session: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.first_frame = asyncio.Event()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = LoggedAudioTrack(self.signal) if self.signal is not None else None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def first_video(self) -> float | None:
        return self.video_t[0] if self.video_t else None

    async def open(self, http: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Offer, POST ``path`` with ``body`` + the offer, apply the answer; start receiving."""
        if self.track is not None:
            self.pc.addTrack(self.track)
        else:
            self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self._tasks.append(asyncio.ensure_future(self._pull(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"type": "offer", "sdp": self.pc.localDescription.sdp}
        self.t_post = time.monotonic()
        r = await http.post(path, json=dict(body, offer=offer))
        if r.status_code != 201:
            raise ServerRefusedError(r.status_code, r.text)
        self.session = r.json()
        await self.pc.setRemoteDescription(RTCSessionDescription(**self.session["answer"]))
        return self.session

    async def _pull(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if track.kind == "video":
                    self.crops.append(mouth_luma(frame))
                    self.video_t.append(now)
                    self.first_frame.set()
                else:
                    x = frame.to_ndarray().astype(np.float32).reshape(-1)
                    channels = len(frame.layout.channels)
                    if channels > 1:
                        x = x.reshape(-1, channels).mean(axis=1)
                    self.audio_rate = frame.sample_rate
                    self.audio.append(x / 32768.0)
                    self.audio_t.append(now)
        except MediaStreamError:
            return
        except Exception as exc:  # keep the measurement going; report it
            self.errors.append(f"{track.kind}: {exc!r}")

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        if self.track is not None:
            self.track.stop()
        await self.pc.close()

    def onset_sends(self) -> list[float]:
        """Send times of the onsets detected in this peer's sent signal (only those sent)."""
        if self.signal is None or self.track is None:
            return []
        sent = self.track.sent
        out = []
        for s in detect_onsets(self.signal, SEND_RATE):
            k = s // SEND_FRAME
            if k < len(sent):
                out.append(sent[k])
        return out

    def returned_onsets(self) -> list[float]:
        """Arrival times of the frames holding the onsets of the returned audio."""
        if not self.audio:
            return []
        sizes = np.array([a.size for a in self.audio])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        times = np.asarray(self.audio_t)
        x = np.concatenate(self.audio)
        return [float(times[int(np.searchsorted(starts, s, side="right")) - 1])
                for s in detect_onsets(x, self.audio_rate)]


def idle_activity(peer: Peer, activity: np.ndarray, sends: Sequence[float]) -> np.ndarray:
    """Activity of the frames that arrived while the sent signal was silent."""
    t = np.asarray(peer.video_t)
    if t.size == 0:
        return np.zeros(0)
    windows = []
    if sends:
        windows.append((t[0] + 0.5, sends[0] + 0.05))
        for a, b in zip(sends, [*sends[1:], t[-1] + 1.0], strict=True):
            windows.append((a + SPEECH_S + IDLE_SETTLE_S, min(b + 0.05, t[-1] + 1.0)))
    else:
        windows.append((t[0] + 0.3, t[-1] + 1.0))
    mask = np.zeros(t.size, bool)
    for lo, hi in windows:
        mask |= (t >= lo) & (t <= hi)
    mask[0] = False
    return activity[mask]


def analyse_mirror(peer: Peer, end: float, threshold: float | None = None) -> dict[str, Any]:
    """Onset latency, A/V offset, frame rate and start time of one mirror peer."""
    t = np.asarray(peer.video_t)
    activity = mouth_activity(peer.crops)
    all_sends = peer.onset_sends()
    sends = [s for s in all_sends if s + MOTION_SEARCH_S <= end]
    idle = idle_activity(peer, activity, all_sends)
    own = calibrate_threshold(idle) if idle.size else None
    thr = threshold if threshold is not None else own
    if thr is None:
        raise RuntimeError("no idle frames to calibrate the mouth threshold on")
    returned = np.asarray(peer.returned_onsets())
    latencies: list[float | None] = []
    offsets: list[float | None] = []
    for s in sends:
        i = first_above(t, activity, thr, s, s + MOTION_SEARCH_S)
        latencies.append(None if i is None else (t[i] - s) * 1e3)
        later = returned[(returned >= s) & (returned <= s + MOTION_SEARCH_S)]
        offsets.append(None if i is None or not later.size else (t[i] - later[0]) * 1e3)
    start = (None if peer.first_video is None or peer.t_post is None
             else (peer.first_video - peer.t_post) * 1e3)
    return {
        "session": peer.session.get("id"), "start_ms": None if start is None else round(start, 1),
        "onsets_sent": len(sends), "onsets_missed": sum(v is None for v in latencies),
        "onset_latency": percentiles([v for v in latencies if v is not None]),
        "onset_latency_each_ms": [None if v is None else round(v, 1) for v in latencies],
        "av_offset": percentiles([v for v in offsets if v is not None]),
        "av_offset_each_ms": [None if v is None else round(v, 1) for v in offsets],
        "video": frame_rate(t), "fps_series": fps_series(t), "threshold": round(thr, 3),
        "own_threshold": None if own is None else round(own, 3),
        "idle_activity": {"n": int(idle.size),
                          "p50": round(float(np.median(idle)), 3) if idle.size else None,
                          "p99": round(float(np.percentile(idle, 99)), 3) if idle.size else None},
        "speech_activity_p50": _speech_activity(t, activity, sends),
        "returned_audio_onsets": int(returned.size), "receiver_errors": peer.errors,
    }


def dump_trace(peer: Peer, path: Path) -> None:
    """Per-frame arrival times and mouth activity, onset send times, returned-audio onsets."""
    np.savez_compressed(path, video_t=np.asarray(peer.video_t),
                        activity=mouth_activity(peer.crops),
                        onset_sends=np.asarray(peer.onset_sends()),
                        returned_onsets=np.asarray(peer.returned_onsets()),
                        crops=np.asarray(peer.crops, np.uint8))


def _speech_activity(t: np.ndarray, activity: np.ndarray, sends: Sequence[float]) -> float | None:
    vals = [activity[(t >= s + 0.3) & (t <= s + SPEECH_S)] for s in sends]
    v = np.concatenate(vals) if vals else np.zeros(0)
    return round(float(np.median(v)), 3) if v.size else None


class CpuMeter:
    """CPU time used on the whole machine, by this client process and by the server process,
    from /proc: how much of the cores other programs took while a stage ran (shared VMs)."""

    def __init__(self, pids: Callable[[], Sequence[int]]) -> None:
        self._pids = pids
        self._hz = os.sysconf("SC_CLK_TCK")
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, list[float]]:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except OSError:
            return time.monotonic(), math.nan, []
        per_pid = []
        for pid in self._pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                per_pid.append((int(stat[11]) + int(stat[12])) / self._hz)
            except (OSError, IndexError, ValueError):
                per_pid.append(math.nan)
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        return time.monotonic(), busy / self._hz, per_pid

    def read(self) -> dict[str, float | None]:
        """Cores busy on average since construction: all, this client, the server, others."""
        t1, busy1, pids1 = self._sample()
        t0, busy0, pids0 = self._start
        dt = max(t1 - t0, 1e-6)
        if math.isnan(busy1 - busy0):
            return {"cores_busy": None, "cores_client": None, "cores_server": None,
                    "cores_others": None}
        used = [(b - a) / dt for a, b in zip(pids0, pids1, strict=False)]
        used = [u if math.isfinite(u) else 0.0 for u in used]
        total = (busy1 - busy0) / dt
        return {"cores_busy": round(total, 2),
                "cores_client": round(used[0], 2) if used else None,
                "cores_server": round(used[1], 2) if len(used) > 1 else None,
                "cores_others": round(max(0.0, total - sum(used)), 2)}


# ============================================================================ server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int, home: Path, max_sessions: int) -> None:
    """Child-process entry: the real server (``build``) on uvicorn; capacity measured at start,
    then the admission limit is set to ``max_sessions`` so the ramp can pass it."""
    import logging

    import uvicorn

    from vivify.streamer.server.config import ServerConfig
    from vivify.streamer.server.serve import JsonFormatter, build

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    app, manager = build(ServerConfig.from_env(port=port, max_sessions=0), home=home)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=5))

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.02)
        measured = manager.capacity
        manager.capacity = max_sessions
        print("VIVIFY_READY " + json.dumps({"capacity_measured": measured,
                                            "workers": manager.scheduler.workers}), flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run()


class ServerProcess:
    """``serve`` in a child process; its stderr goes to a log file."""

    def __init__(self, home: Path, max_sessions: int = 32) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = home
        self.max_sessions = max_sessions
        self.log_path = home / "server.log"
        self.info: dict[str, Any] = {}
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 120.0) -> dict[str, Any]:
        t0 = time.monotonic()
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(self.port),
             "--home", str(self.home), "--max-sessions", str(self.max_sessions)],
            stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)))
        lines: queue.Queue[str] = queue.Queue()

        def read(stream: Any) -> None:
            for line in stream:
                lines.put(line)
            lines.put("")

        threading.Thread(target=read, args=(self.proc.stdout,), daemon=True).start()
        deadline = t0 + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if not line:
                raise RuntimeError(f"server exited (rc {self.proc.wait()}): {self.log_tail()}")
            if line.startswith("VIVIFY_READY "):
                self.info = json.loads(line.split(" ", 1)[1])
                self.info["start_s"] = round(time.monotonic() - t0, 2)
                return self.info
        raise RuntimeError(f"server not ready in {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        return ""

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode


# ============================================================================ stages


@dataclass
class Settings:
    """What one run does; recorded in the JSON."""

    quick: bool = False
    mirror_s: float = 60.0
    session_starts: int = 5
    interrupts: int = 5
    capacity_stage_s: float = 20.0
    capacity_max: int = 12
    budget_s: float = 360.0
    codec: str = "vp8"
    stages: tuple[str, ...] = ("mirror", "session_start", "interrupt", "capacity")
    dump: bool = False  # save the mirror stage's per-frame trace next to the JSON (.npz)

    @classmethod
    def quick_run(cls) -> Settings:
        return cls(quick=True, mirror_s=10.0, session_starts=2, interrupts=2,
                   capacity_stage_s=8.0, capacity_max=6, budget_s=120.0)


class Bench:
    """Runs the stages against one server and writes the report after each."""

    def __init__(self, settings: Settings, server: ServerProcess, out: Path) -> None:
        self.s = settings
        self.server = server
        self.out = out
        self.deadline = time.monotonic() + settings.budget_s
        self.report: dict[str, Any] = {"settings": dataclasses.asdict(settings),
                                       "machine": machine_info(), "stages": {}, "failed": []}
        self.clips = speech_clips(SEND_RATE)
        self.threshold: float | None = None
        self.rss: list[tuple[float, float]] = []  # (monotonic time, server RSS in MiB)

    async def sample_rss(self, every_s: float = 0.5) -> None:
        """Record the server's RSS every ``every_s`` until cancelled: memory per session."""
        while True:
            pid = self.server.proc.pid if self.server.proc else None
            if pid is not None and (v := rss_mib(pid)) is not None:
                self.rss.append((time.monotonic(), v))
            await asyncio.sleep(every_s)

    def rss_between(self, t0: float, t1: float) -> dict[str, float | None]:
        """Median and max server RSS (MiB) sampled between ``t0`` and ``t1``."""
        v = [m for t, m in self.rss if t0 <= t <= t1]
        return {"median": round(float(np.median(v)), 1) if v else None,
                "max": round(max(v), 1) if v else None, "samples": len(v)}

    def memory_summary(self, points: int = 600) -> dict[str, Any]:
        """The server's RSS over the whole run (downsampled) for the report's plot."""
        if not self.rss:
            return {"rss_series": []}
        t0 = self.rss[0][0]
        step = max(1, len(self.rss) // points)
        return {"rss_series": [[round(t - t0, 1), m] for t, m in self.rss[::step]],
                "rss_first_mib": self.rss[0][1], "rss_peak_mib": max(m for _, m in self.rss),
                "rss_last_mib": self.rss[-1][1]}

    def save(self) -> None:
        """Rewrite the JSON report (after every stage and capacity level)."""
        _write_json(self.out, self.report)

    def pids(self) -> list[int]:
        """This process and the server's."""
        return [os.getpid(), *([self.server.proc.pid] if self.server.proc else [])]

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def http(self) -> Any:
        import httpx

        return httpx.AsyncClient(base_url=self.server.url, timeout=30)

    async def wait_drained(self, within_s: float = 8.0) -> int:
        """Wait until the server holds no session; return how many remain."""
        n = -1
        end = time.monotonic() + within_s
        async with self.http() as c:
            while time.monotonic() < end:
                n = (await c.get("/healthz")).json()["sessions"]
                if n == 0:
                    break
                await asyncio.sleep(0.25)
        return n

    async def run_stage(self, name: str, fn: Callable[[], Any]) -> None:
        if name not in self.s.stages:
            return
        log(name, f"start ({self.left():.0f} s of budget left)")
        t0 = time.monotonic()
        load = os.getloadavg()[0]
        cpu = CpuMeter(self.pids)
        try:
            result = await fn()
        except Exception as exc:
            log(name, f"FAILED: {exc!r}")
            self.report["failed"].append(name)
            self.report["stages"][name] = {
                "error": repr(exc), "traceback": traceback.format_exc(),
                "server_log_tail": self.server.log_tail(),
                **self.report["stages"].get(name, {})}
        else:
            self.report["stages"][name] = result
        self.report["stages"][name]["wall_s"] = round(time.monotonic() - t0, 1)
        self.report["stages"][name]["loadavg_1min"] = [round(load, 2),
                                                       round(os.getloadavg()[0], 2)]
        self.report["stages"][name]["cpu"] = cpu.read()
        self.save()

    # ---------------------------------------------------------------- mirror
    async def _mirror_peers(self, n: int, seconds: float, stage: str) -> list[Peer]:
        """``n`` mirror peers for ``seconds``, onsets staggered; progress every 5 s."""
        peers = []
        for i in range(n):
            lead = LEAD_S + i * (SPEECH_S + SILENCE_S) / max(n, 1)
            signal, _ = cycle_signal(seconds + 5.0, SEND_RATE, self.clips, lead_s=lead)
            peers.append(Peer(signal))
        body = {"avatar": "default", "mode": "mirror",
                "video": {"fps": 25, "size": 512, "codec": self.s.codec}}
        async with self.http() as c:
            await asyncio.gather(*(p.open(c, "/v1/sessions", body) for p in peers))
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end:
            await asyncio.sleep(min(5.0, end - now))
            frames = [len(p.video_t) for p in peers]
            log(stage, f"{seconds - max(0.0, end - time.monotonic()):4.0f}/{seconds:.0f} s, "
                       f"{n} session(s), frames received {frames}")
        return peers

    async def _server_stats(self, peers: Sequence[Peer]) -> list[dict[str, Any]]:
        out = []
        async with self.http() as c:
            for p in peers:
                r = await c.get(f"/v1/sessions/{p.session.get('id')}")
                out.append(r.json().get("media", r.json()) if r.status_code == 200
                           else {"status": r.status_code})
        return out

    async def mirror(self) -> dict[str, Any]:
        stage: dict[str, Any] = {}
        self.report["stages"]["mirror"] = stage
        t_start = time.monotonic()
        rss_before = rss_mib(self.server.proc.pid) if self.server.proc else None
        peers = await self._mirror_peers(1, self.s.mirror_s, "mirror")
        end = time.monotonic()
        # The first session on a fresh server: what one session adds to its memory.
        stage["rss_mib"] = {"before": rss_before, **self.rss_between(t_start + 3.0, end)}
        stage["server_stats"] = (await self._server_stats(peers))[0]
        for p in peers:
            await p.close()
        result = analyse_mirror(peers[0], end)
        if self.s.dump:
            dump_trace(peers[0], self.out.with_suffix(".mirror.npz"))
        self.threshold = result["own_threshold"]
        stage.update(result)
        stage["drained_sessions_left"] = await self.wait_drained()
        lat, off = result["onset_latency"], result["av_offset"]
        log("mirror", f"onset p50 {lat['p50_ms']} ms p95 {lat['p95_ms']} ms "
                      f"({lat['n']}/{result['onsets_sent']}), fps {result['video']['fps']}, "
                      f"gap p95 {result['video']['gap_p95_ms']} ms, A/V offset p50 "
                      f"{off['p50_ms']} ms, start {result['start_ms']} ms")
        return stage

    # ---------------------------------------------------------------- session start
    async def session_start(self) -> dict[str, Any]:
        starts: list[float] = []
        stage: dict[str, Any] = {"each_ms": starts}
        self.report["stages"]["session_start"] = stage
        signal = np.zeros(SEND_RATE * 4, np.float32)
        body = {"mode": "mirror", "video": {"codec": self.s.codec}}
        async with self.http() as c:
            for i in range(self.s.session_starts):
                peer = Peer(signal)
                await peer.open(c, "/v1/sessions", body)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(peer.first_frame.wait(), 5.0)
                if peer.first_video is not None and peer.t_post is not None:
                    starts.append(round((peer.first_video - peer.t_post) * 1e3, 1))
                await peer.close()
                log("session_start", f"{i + 1}/{self.s.session_starts}: "
                                     f"{starts[-1] if starts else None} ms")
                await self.wait_drained()
        mirror_start = self.report["stages"].get("mirror", {}).get("start_ms")
        stage.update(percentiles([*starts, *([mirror_start] if mirror_start else [])]))
        stage["note"] = "POST sent → first decoded video frame; includes the mirror stage's one"
        return stage

    # ---------------------------------------------------------------- interrupt
    async def interrupt(self) -> dict[str, Any]:
        import websockets

        reps: list[dict[str, Any]] = []
        stage: dict[str, Any] = {"repetitions": reps}
        self.report["stages"]["interrupt"] = stage
        sentence = espeak(SENTENCE, WS_RATE)
        if sentence is None:
            sentence = synthetic_vowels(6.0, WS_RATE)
        pcm = np.clip(np.rint(_level(sentence, -18.0) * 32767), -32768, 32767).astype("<i2")
        events: list[tuple[float, dict[str, Any]]] = []
        async with self.http() as c:
            r = await c.post("/v1/sessions", json={"mode": "broadcast",
                                                   "video": {"codec": self.s.codec}})
            if r.status_code != 201:
                raise ServerRefusedError(r.status_code, r.text)
            sid = r.json()["id"]
            viewer = Peer()
            await viewer.open(c, f"/v1/sessions/{sid}/viewers", {})
        url = f"ws://127.0.0.1:{self.server.port}/v1/sessions/{sid}/ws"
        rng = random.Random(4)
        sent_at: list[float] = []
        pushed_at: list[float] = []
        timing: list[tuple[float, float | None, float | None]] = []
        async with websockets.connect(url) as ws:
            async def listen() -> None:
                with contextlib.suppress(Exception):
                    async for m in ws:
                        events.append((time.monotonic(), json.loads(m)))

            listener = asyncio.create_task(listen())
            await asyncio.sleep(2.0)
            for k in range(self.s.interrupts):
                n_events = len(events)
                pushed_at.append(time.monotonic())
                for i in range(0, pcm.size, WS_RATE):
                    await ws.send(pcm[i:i + WS_RATE].tobytes())
                started = await _wait_event(events, n_events, "playback_started", 5.0)
                await asyncio.sleep(1.0 + rng.uniform(0.0, 0.4))
                t_int = time.monotonic()
                await ws.send(json.dumps({"type": "interrupt"}))
                sent_at.append(t_int)
                finished = await _wait_event(events, n_events, "playback_finished", 3.0)
                await asyncio.sleep(max(0.0, t_int + SETTLED_S[1] + 0.2 - time.monotonic()))
                timing.append((t_int, started, finished))
                log("interrupt", f"{k + 1}/{self.s.interrupts} sent")
            listener.cancel()
        await viewer.close()
        # Analysed only now: the image work would stall this loop and so the receiver.
        for k, (t_int, started, finished) in enumerate(timing):
            rep = analyse_interrupt(viewer, t_int, self.threshold)
            rep.update(sent_after_playback_started_ms=None if started is None
                       else round((t_int - started) * 1e3, 1),
                       finished_event_ms=None if finished is None
                       else round((finished - t_int) * 1e3, 1))
            reps.append(rep)
            log("interrupt", f"{k + 1}/{len(timing)}: idle match {rep['to_idle_match_ms']} ms, "
                             f"still {rep['to_still_ms']} ms")
        if self.s.dump:
            np.savez_compressed(self.out.with_suffix(".interrupt.npz"),
                                video_t=np.asarray(viewer.video_t),
                                crops=np.asarray(viewer.crops, np.uint8),
                                interrupts=np.asarray(sent_at))
        async with self.http() as c:
            r = await c.get(f"/v1/sessions/{sid}")
            stage["server_stats"] = r.json().get("media") if r.status_code == 200 else None
            await c.delete(f"/v1/sessions/{sid}")
        stage["freezes"] = freezes(np.asarray(viewer.video_t), {"push": pushed_at,
                                                                "interrupt": sent_at})
        stage["to_idle_match"] = percentiles([r["to_idle_match_ms"] for r in reps])
        stage["to_still"] = percentiles([r["to_still_ms"] for r in reps])
        stage["video"] = frame_rate(np.asarray(viewer.video_t))
        stage["receiver_errors"] = viewer.errors
        return stage

    # ---------------------------------------------------------------- capacity
    async def _capacity_level(self, n: int, attempt: int) -> dict[str, Any]:
        """Run ``n`` concurrent mirror sessions once; per-session and pooled figures."""
        cpu = CpuMeter(self.pids)
        t_start = time.monotonic()
        rss_before = rss_mib(self.server.proc.pid) if self.server.proc else None
        peers = await self._mirror_peers(n, self.s.capacity_stage_s, f"capacity n={n}")
        end = time.monotonic()
        stats = await self._server_stats(peers)
        usage = cpu.read()
        for p in peers:
            await p.close()
        per = [analyse_mirror(p, end, self.threshold) for p in peers]
        onsets = [v for r in per for v in r["onset_latency_each_ms"] if v is not None]
        fps = [r["video"]["fps"] or 0.0 for r in per]
        level = {"sessions": n, "attempt": attempt, "fps_min": min(fps), "fps_each": fps,
                 "onset_latency": percentiles(onsets),
                 "onset_latency_each_ms": onsets,
                 "fps_series_each": [r["fps_series"] for r in per],
                 "rss_mib": {"before": rss_before,
                             **self.rss_between(t_start + 3.0, end)},
                 "onsets_missed": sum(r["onsets_missed"] for r in per),
                 "onsets": len(onsets),
                 "gap_p95_ms_max": max(r["video"]["gap_p95_ms"] or 0 for r in per),
                 "start_ms_each": [r["start_ms"] for r in per],
                 "av_offset_p50_ms_each": [r["av_offset"]["p50_ms"] for r in per],
                 "server_stats": stats, "cpu": usage}
        left = await self.wait_drained()
        if left:
            level["sessions_left_after_close"] = left
        return level

    async def capacity(self) -> dict[str, Any]:
        levels: list[dict[str, Any]] = []
        stage: dict[str, Any] = {"levels": levels, "server_estimate":
                                 self.server.info.get("capacity_measured")}
        self.report["stages"]["capacity"] = stage
        stage["criteria"] = (f"every session ≥ {FPS_FLOOR} fps, pooled p95 onset ≤ "
                             f"{ONSET_GROWTH} × level 1's, ≤ 10 % of onsets missed; a failing "
                             f"level is run once more (shared, noisy VM) before the ramp stops")
        base_p95: float | None = None
        held = 0
        n, attempt = 1, 1
        stage["rss_idle_mib"] = rss_mib(self.server.proc.pid) if self.server.proc else None
        while n <= self.s.capacity_max:
            need = self.s.capacity_stage_s + 6.0 + 2.0 * n
            if self.left() < need:
                stage["stopped"] = f"time budget: {self.left():.0f} s left, level needs {need:.0f}"
                break
            try:
                level = await self._capacity_level(n, attempt)
            except ServerRefusedError as exc:
                stage["stopped"] = f"server refused level {n}: {exc}"
                break
            p95 = level["onset_latency"]["p95_ms"]
            limit = None if base_p95 is None else ONSET_GROWTH * base_p95
            if n == 1:
                limit = p95
            ok = (level["fps_min"] >= FPS_FLOOR and p95 is not None and limit is not None
                  and p95 <= limit
                  and level["onsets_missed"] <= max(1, (level["onsets"]
                                                        + level["onsets_missed"]) // 10))
            level["real_time"] = ok
            levels.append(level)
            log(f"capacity n={n}", f"{'holds' if ok else 'FAILS'}: fps min {level['fps_min']}, "
                                   f"onset p95 {p95} ms (limit {limit}), missed "
                                   f"{level['onsets_missed']}; cores used by the server "
                                   f"{level['cpu']['cores_server']}, this client "
                                   f"{level['cpu']['cores_client']}, other programs "
                                   f"{level['cpu']['cores_others']}")
            self.save()
            if ok:
                if n == 1:
                    base_p95 = p95
                held, n, attempt = n, n + 1, 1
            elif attempt == 1:
                attempt = 2
            else:
                stage["stopped"] = f"level {n} is not real-time (twice)"
                break
        stage["real_time_sessions"] = held
        stage["single_session_p95_ms"] = base_p95
        stage["rss_per_session_mib"] = rss_per_session(levels, stage["rss_idle_mib"])
        return stage


def rss_per_session(levels: Sequence[dict[str, Any]], idle: float | None) -> dict[str, Any]:
    """Server memory one more session costs: the slope of median RSS against the number of
    sessions over the ramp's levels, and level 1's median minus the server's RSS when the ramp
    began. Python keeps freed memory, so a level starts at the earlier stages' high-water mark
    and that delta is a lower bound; the mirror stage's ``rss_mib`` (first session on a fresh
    server) includes first-use allocations and is the upper one."""
    pts = [(lv["sessions"], lv["rss_mib"]["median"]) for lv in levels
           if (lv.get("rss_mib") or {}).get("median") is not None]
    out: dict[str, Any] = {"slope": None, "one_session_delta": None}
    if len({n for n, _ in pts}) >= 2:
        x, y = np.array(pts, np.float64).T
        out["slope"] = round(float(np.polyfit(x, y, 1)[0]), 1)
    one = [m for n, m in pts if n == 1]
    if one and idle is not None:
        out["one_session_delta"] = round(one[0] - idle, 1)
    return out


def freezes(times: np.ndarray, marks: dict[str, Sequence[float]],
            over_s: float = 0.2) -> list[dict[str, Any]]:
    """Gaps between received frames longer than ``over_s``, each with its start relative to
    the nearest preceding mark of every kind (e.g. the last push, the last interrupt)."""
    out = []
    for i in np.flatnonzero(np.diff(times) > over_s):
        gap: dict[str, Any] = {"ms": round(float(times[i + 1] - times[i]) * 1e3, 1)}
        for name, ts in marks.items():
            before = [times[i] - m for m in ts if m <= times[i]]
            gap[f"after_{name}_ms"] = round(min(before) * 1e3, 1) if before else None
        out.append(gap)
    return out


async def _wait_event(events: list[tuple[float, dict[str, Any]]], since: int, kind: str,
                      within_s: float) -> float | None:
    """Arrival time of the first ``kind`` event at index ≥ ``since`` (None if none came)."""
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        for t, e in events[since:]:
            if e.get("type") == kind:
                return t
        await asyncio.sleep(0.01)
    return None


def analyse_interrupt(viewer: Peer, t_int: float, threshold: float | None) -> dict[str, Any]:
    """Interrupt → the frame from which the face is idle and stays idle (up to 1.2 s after
    the interrupt, when it has certainly settled), by two criteria.

    *idle match*: the mouth box, head sway aligned away (:func:`aligned_distance`), is within
    ``max(1.5 × d, d + 1.5)`` of the idle state the face settles into (mean of the frames
    1.2–2.4 s after the interrupt), ``d`` the largest distance of those frames to their mean.
    *still*: no motion, i.e. no run of ``MOTION_RUN`` frames above the idle threshold (a lone
    codec spike is not motion). Repeated frames (activity exactly 0: the server held a frame)
    are skipped by both: a frozen speaking face is not idle."""
    t = np.asarray(viewer.video_t)
    crops = viewer.crops[:t.size]
    activity = mouth_activity(crops)
    idle_idx = np.flatnonzero((t >= t_int + SETTLED_S[0]) & (t < t_int + SETTLED_S[1]))
    if idle_idx.size < 3:  # the viewer's video stalled: no idle reference, "still" only
        log("interrupt", f"only {idle_idx.size} viewer frames {SETTLED_S[0]}–{SETTLED_S[1]} s "
                         "after the interrupt: no idle reference")
    dist = np.full(t.size, np.inf)
    idle_range = math.nan
    if idle_idx.size >= 3:
        ref = np.mean([crops[i] for i in idle_idx], axis=0)
        d_idle = max(aligned_distance(crops[i], ref) for i in idle_idx)
        idle_range = max(1.5 * d_idle, d_idle + 1.5)
        for i in np.flatnonzero((t >= t_int - 0.5) & (t <= t_int + SETTLED_S[1])):
            dist[i] = aligned_distance(crops[i], ref)
    if threshold is not None:
        thr = threshold
    elif idle_idx.size >= 3:
        thr = calibrate_threshold(activity[idle_idx])
    else:
        raise RuntimeError("no idle frames to calibrate the mouth threshold on")
    held = activity < HELD
    before = (t >= t_int - 0.5) & (t < t_int)
    after = (t >= t_int) & (t <= t_int + 0.5)
    until = t_int + SETTLED_S[0]
    match = idle_for_good(dist <= idle_range, t, t_int, until, skip=held)
    moving = in_runs(activity > thr, MOTION_RUN, skip=held)
    still = idle_for_good(~moving, t, t_int, until, skip=held)
    first_match = first_run(dist <= idle_range, t, t_int, IDLE_RUN, skip=held)
    return {"to_idle_match_ms": None if match is None else round((t[match] - t_int) * 1e3, 1),
            "to_still_ms": None if still is None else round((t[still] - t_int) * 1e3, 1),
            "first_idle_run_ms": None if first_match is None
            else round((t[first_match] - t_int) * 1e3, 1),
            "mouth_moving_before": bool((activity[before] > thr).any()) if before.any()
            else False,
            "distance_at_interrupt": _last(dist[before]),
            "distance_peak_after": round(float(dist[after].max()), 2) if after.any() else None,
            "held_frames_after": int((held & after).sum()),
            "idle_range": None if math.isnan(idle_range) else round(idle_range, 3),
            "settled_frames": int(idle_idx.size), "threshold": round(thr, 3)}


def _last(v: np.ndarray) -> float | None:
    return round(float(v[-1]), 2) if v.size and np.isfinite(v[-1]) else None


# ============================================================================ report


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return repr(x)


def _write_json(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=_jsonable))
    tmp.replace(path)


def _git_sha() -> str | None:
    """The checked-out commit, read from .git without running git."""
    git = REPO / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        return None
    return None


def machine_info() -> dict[str, Any]:
    """Host, CPU, load and library versions: what the numbers depend on."""
    import importlib.metadata as md

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in ("aiortc", "av", "numpy", "opencv-python-headless", "fastapi", "uvicorn",
                "websockets", "httpx"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[pkg] = md.version(pkg)
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)), "os": platform.platform(),
            "python": sys.version.split()[0], "versions": versions, "git": _git_sha(),
            "loadavg_at_start": os.getloadavg(), "gpu": None,
            "thread_env": {k: os.environ.get(k) for k in THREAD_ENV},
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, result, target) rows for the printed table."""
    st = report["stages"]
    rows: list[tuple[str, str, str]] = []

    def ms(d: dict[str, Any] | None, key: str) -> str:
        v = (d or {}).get(key)
        return "—" if v is None else f"{v:.0f} ms"

    m = st.get("mirror", {})
    if m:
        lat = m.get("onset_latency", {})
        rows.append(("speech onset → mouth moves (p50 / p95)",
                     f"{ms(lat, 'p50_ms')} / {ms(lat, 'p95_ms')}  (n={lat.get('n')}, missed "
                     f"{m.get('onsets_missed')})", "p50 ≤ 250 ms"))
        v = m.get("video", {})
        rows.append(("delivered fps / p95 gap", f"{v.get('fps')} fps / {ms(v, 'gap_p95_ms')}  "
                     f"({v.get('seconds')} s)", "25 ± 1 fps, ≤ 60 ms"))
        off = m.get("av_offset", {})
        rows.append(("A/V offset at receiver (p50 / p95, + = video late)",
                     f"{ms(off, 'p50_ms')} / {ms(off, 'p95_ms')}", "≤ 40 ms"))
    s = st.get("session_start", {})
    if s:
        rows.append(("session start → first frame (p50 / max)",
                     f"{ms(s, 'p50_ms')} / {ms(s, 'max_ms')}  (n={s.get('n')})", "≤ 1 s"))
    elif m:
        rows.append(("session start → first frame", ms(m, "start_ms"), "≤ 1 s"))
    i = st.get("interrupt", {})
    if i:
        a, b = i.get("to_idle_match", {}), i.get("to_still", {})
        rows.append(("interrupt → idle face (p50 / max)",
                     f"match {ms(a, 'p50_ms')} / {ms(a, 'max_ms')}; still {ms(b, 'p50_ms')} / "
                     f"{ms(b, 'max_ms')}  (n={a.get('n')})", "≤ 100 ms"))
    c = st.get("capacity", {})
    if c:
        rows.append(("concurrent real-time sessions (512², 25 fps)",
                     f"{c.get('real_time_sessions')}  (server estimate "
                     f"{c.get('server_estimate')})", "—"))
        for lv in c.get("levels", []):
            cpu = lv.get("cpu") or {}
            rows.append((f"  {lv['sessions']} session(s), try {lv.get('attempt', 1)}",
                         f"{'holds' if lv.get('real_time') else 'fails'}: fps min "
                         f"{lv['fps_min']}, onset p95 {ms(lv['onset_latency'], 'p95_ms')}, "
                         f"missed {lv['onsets_missed']}; server {cpu.get('cores_server')} / "
                         f"client {cpu.get('cores_client')} / others "
                         f"{cpu.get('cores_others')} cores", "—"))
    busy = [v["cpu"]["cores_others"] for v in st.values()
            if isinstance(v, dict) and (v.get("cpu") or {}).get("cores_others") is not None]
    if busy:
        rows.append(("CPU taken by other programs during the stages",
                     f"{min(busy):.2f}–{max(busy):.2f} of {os.cpu_count()} cores", "0"))
    for name in report.get("failed", []):
        rows.append((f"stage {name}", "FAILED", st.get(name, {}).get("error", "")[:60]))
    return rows


def print_table(report: dict[str, Any]) -> None:
    rows = summary_rows(report)
    w0 = max((len(r[0]) for r in rows), default=10)
    w1 = max((len(r[1]) for r in rows), default=10)
    print(f"{'measure':<{w0}}  {'result':<{w1}}  target")
    for a, b, c in rows:
        print(f"{a:<{w0}}  {b:<{w1}}  {c}")


# ============================================================================ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10 s mirror run, short ramp (< 2 min)")
    p.add_argument("--stages", help="comma-separated subset of "
                                    "mirror,session_start,interrupt,capacity")
    p.add_argument("--mirror-seconds", type=float, help="mirror stage length")
    p.add_argument("--capacity-seconds", type=float, help="length of each capacity level")
    p.add_argument("--capacity-max", type=int, help="highest level to try")
    p.add_argument("--interrupts", type=int, help="interrupt repetitions")
    p.add_argument("--session-starts", type=int, help="extra session-start measurements")
    p.add_argument("--budget", type=float, help="seconds for the whole run")
    p.add_argument("--codec", choices=("vp8", "h264"), help="video codec (default vp8)")
    p.add_argument("--dump", action="store_true", help="save the mirror trace (.npz)")
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/loopback-*.json)")
    p.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--max-sessions", type=int, default=32, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    s = Settings.quick_run() if args.quick else Settings()
    overrides = {"mirror_s": args.mirror_seconds, "capacity_stage_s": args.capacity_seconds,
                 "capacity_max": args.capacity_max, "interrupts": args.interrupts,
                 "session_starts": args.session_starts, "budget_s": args.budget,
                 "codec": args.codec, "dump": args.dump or None}
    s = dataclasses.replace(s, **{k: v for k, v in overrides.items() if v is not None})
    if args.stages:
        names = tuple(x.strip() for x in args.stages.split(",") if x.strip())
        unknown = set(names) - set(Settings.stages)
        if unknown:
            raise SystemExit(f"unknown stage(s): {', '.join(sorted(unknown))}")
        s = dataclasses.replace(s, stages=names)
    return s


async def run(settings: Settings, out: Path) -> dict[str, Any]:
    """Start the server, run the stages, stop the server; the report (also saved to ``out``)."""
    with tempfile.TemporaryDirectory(prefix="vivify-loopback-") as tmp:
        server = ServerProcess(Path(tmp))
        bench: Bench | None = None
        sampler: asyncio.Task[None] | None = None
        try:
            log("server", "starting (prepares the default avatar, measures capacity)")
            info = server.start()
            log("server", f"ready in {info['start_s']} s on {server.url}; its own capacity "
                          f"estimate: {info['capacity_measured']} sessions")
            bench = Bench(settings, server, out)
            bench.report["server"] = info
            bench.save()
            sampler = asyncio.create_task(bench.sample_rss())
            await bench.run_stage("mirror", bench.mirror)
            await bench.run_stage("session_start", bench.session_start)
            await bench.run_stage("interrupt", bench.interrupt)
            await bench.run_stage("capacity", bench.capacity)
        except Exception as exc:
            report: dict[str, Any] = bench.report if bench else {
                "settings": dataclasses.asdict(settings), "machine": machine_info(),
                "stages": {}, "failed": []}
            report["failed"].append("server")
            report["stages"]["server"] = {"error": repr(exc), "log_tail": server.log_tail()}
            log("server", f"FAILED: {exc!r}")
            if bench is None:
                _write_json(out, report)
                return report
        finally:
            if sampler is not None:
                sampler.cancel()
            rc = server.stop()
            if bench is not None:
                bench.report["memory"] = bench.memory_summary()
                bench.report["server_exit_code"] = rc
                bench.report["total_s"] = round(time.monotonic() - _T0, 1)
                bench.save()
        return bench.report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve is not None:
        if args.home is None:
            raise SystemExit("--serve needs --home")
        serve(args.serve, args.home, args.max_sessions)
        return 0
    settings = settings_from(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS_DIR / f"loopback-{'quick-' if settings.quick else ''}{stamp}.json"
    report = asyncio.run(run(settings, out))
    print_table(report)
    print(f"report: {out}")
    return 1 if report.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
