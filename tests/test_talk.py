"""``vivify talk`` against the real server (the LiveServer fixture of test_server), plus the
device-free pieces of the microphone/speaker path.

PortAudio has no devices on this machine, so real capture and playback cannot run here. What
can: the mic track on a fake blocking stream (frames, pts, backlog, end of stream), the speaker
buffer on its own, the whole device path against the live server with a stand-in ``pyaudio``
module (only the hardware is fake), and the real PortAudio's "no device" error.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import re
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from tests.support.live_server import TOKEN, LiveServer
from tests.support.video import mouth_activity
from tests.support.waiting import eventually
from vivify.streamer.cli import talk
from vivify.streamer.cli.talk import (
    EXIT_AUTH,
    EXIT_ERROR,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    MediaTimeline,
    PcmCapture,
    PlayoutBuffer,
    Recorder,
    TalkError,
    add_talk_parser,
    microphone_track,
    pick_device,
)


def _run(argv: list[str]) -> int:
    """Parse ``vivify talk ARGV`` with the real registration and run it, like the CLI does."""
    parser = argparse.ArgumentParser(prog="vivify")
    add_talk_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["talk", *argv])
    return int(args.func(args))


def _decode(path: Path) -> tuple[list[np.ndarray], np.ndarray, float, float]:
    """Frames (RGB), 16 kHz mono audio, the video stream's rate and the audio rate of an MP4."""
    with av.open(str(path)) as c:
        vs, aus = c.streams.video[0], c.streams.audio[0]
        rate = float(vs.average_rate or 0)
        audio_rate = float(aus.rate)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(vs)]
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(c.streams.audio[0])])
    return frames, audio, rate, audio_rate


# ---------------------------------------------------------------------------- against a server


@pytest.fixture(scope="module")
def loud_server(face_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server whose mouth follows loudness (the baseline driver): the recording's sync is
    read from mouth vs loudness, which the learned mouth (shut on loud b/p/m) does not track."""
    with LiveServer(tmp_path_factory.mktemp("home"), TOKEN, driver="baseline") as live:
        yield live


@pytest.mark.slow
def test_mirror_file_is_recorded_in_sync(loud_server: LiveServer, speech: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    server = loud_server
    out = tmp_path / "out.mp4"
    t0 = time.monotonic()
    code = _run(["--server", server.url, "--token", TOKEN, "--audio", str(speech),
                 "--save", str(out)])
    wall = time.monotonic() - t0
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "the audio file finished" in printed.out and f"saved {out}" in printed.out
    assert re.search(r"\(([\d.]+) fps, 512×512\)", printed.out)  # rates: bench/loopback.py
    session = re.search(r"session ([0-9a-f]+) ended", printed.out)[1]  # type: ignore[index]
    assert session not in server.manager.sessions  # DELETEd on the way out

    frames, audio, rate, audio_rate = _decode(out)
    assert rate == 25 and frames[0].shape == (512, 512, 3)
    assert audio_rate == 16_000
    # The whole call is in the file: ~the speech (≈4 s) plus the 1 s tail, at 25 fps.
    assert 4.0 * 25 <= len(frames) <= (wall + 1) * 25
    assert abs(len(audio) / audio_rate - len(frames) / 25) < 0.3
    activity = mouth_activity(frames)
    assert activity.max() > 3.0  # the mouth moves while the speech plays
    assert np.abs(audio).max() > 0.1  # and the speech came back with it

    lag, score = _av_lag(frames, audio)
    assert abs(lag) <= 1 and score > 0.6, (lag, score)  # sound and mouth line up within 40 ms


def _av_lag(frames: list[np.ndarray], audio: np.ndarray, max_lag: int = 10
            ) -> tuple[int, float]:
    """The shift (in frames, + = video late) that best lines mouth opening up with loudness,
    and its correlation.

    Opening is the mouth region's distance from the resting face (frames 3–7, before the
    speech reaches the server); loudness the RMS of each frame's 40 ms of audio. The whole clip
    is compared, so one glitch on a loaded machine (a VP8 quality step) cannot decide it.
    """
    region = np.stack([f[290:380, 190:320].astype(np.float32) for f in frames])
    rest = np.median(region[3:8], axis=0)
    opening = np.abs(region - rest).mean(axis=(1, 2, 3))
    levels = np.array([np.sqrt(np.mean(audio[i:i + 640] ** 2))
                       for i in range(0, len(audio) - 640, 640)])
    first, last = 8 + max_lag, min(len(opening), len(levels)) - max_lag
    mouth = opening[first:last]
    mouth = (mouth - mouth.mean()) / (mouth.std() + 1e-9)
    scores = {}
    for lag in range(-max_lag, max_lag + 1):
        loud = levels[first - lag:last - lag]
        scores[lag] = float(np.mean(mouth * (loud - loud.mean()) / (loud.std() + 1e-9)))
    best = max(scores, key=lambda k: scores[k])
    return best, scores[best]


@pytest.mark.slow
def test_broadcast_file_over_websocket(server: LiveServer, speech: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = _run(["--server", server.url, "--token", TOKEN, "--mode", "broadcast",
                 "--audio", str(speech)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "ended: playback finished" in printed.out
    assert re.search(r"playback_finished at (\d+) ms", printed.out)
    assert int(re.search(r"playback_finished at (\d+) ms", printed.out)[1]) > 2000  # type: ignore[index]
    assert "playback started" in printed.err
    frames = int(re.search(r"received (\d+) video frames", printed.out)[1])  # type: ignore[index]
    assert frames > 75
    assert not server.manager.sessions


@pytest.mark.slow
@pytest.mark.parametrize("token", ["nope", None])
def test_wrong_or_missing_token_is_refused(server: LiveServer, speech: Path, token: str | None,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIVIFY_TOKEN", raising=False)
    argv = ["--server", server.url, "--audio", str(speech), "--mode", "broadcast"]
    code = _run([*argv, "--token", token] if token else argv)
    err = capsys.readouterr().err
    assert code == EXIT_AUTH
    assert "refused the token" in err and "--token" in err
    assert not server.manager.sessions


class FakeDevices:
    """A stand-in ``pyaudio`` module: a microphone that plays a wav in real time, a speaker
    whose callback is pulled every 20 ms like PortAudio's. Only the hardware is fake."""

    paInt16 = 8
    paContinue = 0

    def __init__(self, mic_pcm48k: np.ndarray, mono_ok: bool = True) -> None:
        self.mic = mic_pcm48k
        self.mono_ok = mono_ok
        self.played: list[bytes] = []
        self.opened: list[dict[str, Any]] = []
        self.terminated = False

    def PyAudio(self) -> FakeDevices:  # the real module's class, called the same way
        return self

    def get_device_count(self) -> int:
        return 2

    def get_device_info_by_index(self, i: int) -> dict[str, Any]:
        return [{"index": 0, "name": "Fake Mic", "maxInputChannels": 1, "maxOutputChannels": 0,
                 "defaultSampleRate": 44100.0},
                {"index": 1, "name": "Fake Speaker", "maxInputChannels": 0,
                 "maxOutputChannels": 2, "defaultSampleRate": 48000.0}][i]

    def get_default_input_device_info(self) -> dict[str, Any]:
        return self.get_device_info_by_index(0)

    def get_default_output_device_info(self) -> dict[str, Any]:
        return self.get_device_info_by_index(1)

    def is_format_supported(self, rate: int, **_: Any) -> bool:
        return rate == 48_000

    def open(self, *, channels: int, rate: int, input: bool = False,
             stream_callback: Any = None, **kwargs: Any) -> Any:
        if channels == 1 and not input and not self.mono_ok:
            raise OSError("Invalid number of channels")
        self.opened.append(dict(kwargs, channels=channels, rate=rate, input=input))
        return _FakeIn(self.mic, rate) if input else _FakeOut(self, stream_callback, rate)

    def terminate(self) -> None:
        self.terminated = True


class _FakeIn:
    def __init__(self, pcm: np.ndarray, rate: int) -> None:
        self.pcm, self.rate, self.pos, self.t0 = pcm, rate, 0, time.monotonic()

    def read(self, n: int, exception_on_overflow: bool = True) -> bytes:
        self.pos += n  # real-time paced, silence after the speech, like a quiet room
        time.sleep(max(0.0, self.t0 + self.pos / self.rate - time.monotonic()))
        chunk = self.pcm[self.pos - n:self.pos]
        return np.pad(chunk, (0, n - chunk.size)).astype("<i2").tobytes()

    def stop_stream(self) -> None: ...

    def close(self) -> None: ...


class _FakeOut:
    def __init__(self, owner: FakeDevices, callback: Any, rate: int) -> None:
        self.stopped = threading.Event()

        def pull() -> None:
            while not self.stopped.wait(0.02):
                data, flag = callback(None, rate // 50, {}, 0)
                assert flag == owner.paContinue
                owner.played.append(data)

        threading.Thread(target=pull, daemon=True).start()

    def stop_stream(self) -> None:
        self.stopped.set()

    def close(self) -> None: ...


@pytest.mark.slow
def test_live_microphone_and_speaker_with_fake_devices(
        server: LiveServer, speech: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The device path end to end, with only PortAudio faked: the mic's frames drive the
    avatar in mirror mode and the answer reaches the speaker callback (stereo fallback)."""
    from vivify.engines.audio.audio_io import load_audio

    pcm = np.repeat(np.clip(load_audio(speech) * 32767, -32768, 32767), 3)  # 16 → 48 kHz
    fake = FakeDevices(pcm.astype(np.int16), mono_ok=False)
    monkeypatch.setitem(sys.modules, "pyaudio", fake)
    code = _run(["--server", server.url, "--token", TOKEN, "--seconds", "5",
                 "--input-device", "mic", "--output-device", "speaker"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "--seconds 5 reached" in printed.out
    assert fake.terminated and [o["channels"] for o in fake.opened] == [1, 2]
    assert fake.opened[0]["input_device_index"] == 0 and fake.opened[1]["rate"] == 48_000
    played = np.frombuffer(b"".join(fake.played), "<i2").reshape(-1, 2)
    assert len(played) > 3 * 48_000  # the speaker was fed all along
    assert np.abs(played).max() > 3000  # with the speech that came back
    assert not server.manager.sessions


def test_server_not_running(speech: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connection refused
        code = _run(["--server", f"http://127.0.0.1:{port}", "--audio", str(speech)])
    err = capsys.readouterr().err
    assert code == EXIT_UNREACHABLE
    assert f"cannot reach the Vivify server at http://127.0.0.1:{port}" in err
    assert "vivify serve" in err


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--audio", str(tmp_path / "missing.wav")]) == EXIT_USAGE
    assert "no such file" in capsys.readouterr().err
    assert _run(["--server", "ftp://x", "--audio", str(tmp_path)]) == EXIT_USAGE
    assert _run(["--save", str(tmp_path / "nope" / "out.mp4"), "--seconds", "1"]) == EXIT_USAGE


# ---------------------------------------------------------------------------- device-free parts


class FakeMic:
    """A blocking PCM source like a PyAudio input stream: a ramp, real-time paced if asked."""

    def __init__(self, rate: int, blocks: int, pace: float = 0.0) -> None:
        self.rate, self.blocks, self.pace = rate, blocks, pace
        self.reads: list[int] = []
        self.next = 0

    def read(self, num_frames: int, exception_on_overflow: bool = True) -> bytes:
        assert exception_on_overflow is False  # an overflow must never kill the call
        if len(self.reads) >= self.blocks:
            raise OSError("device unplugged")
        if self.pace:
            time.sleep(self.pace)
        self.reads.append(num_frames)
        ramp = (np.arange(self.next, self.next + num_frames) % 30000).astype("<i2")
        self.next += num_frames
        return ramp.tobytes()


def test_microphone_track_frames_and_pts() -> None:
    async def scenario() -> list[Any]:
        mic = FakeMic(48_000, blocks=5)
        capture = PcmCapture(mic, 48_000)
        track = microphone_track(capture)
        assert track.kind == "audio"
        frames = [await track.recv() for _ in range(5)]
        with pytest.raises(MediaStreamError):  # the device went away: the track ends
            await track.recv()
        assert track.readyState == "ended" and isinstance(capture.error, OSError)
        assert mic.reads == [960] * 5  # 20 ms blocks
        return frames

    frames = asyncio.run(scenario())
    assert [f.pts for f in frames] == [0, 960, 1920, 2880, 3840]
    for f in frames:
        assert f.samples == 960 and f.sample_rate == 48_000 and f.format.name == "s16"
        assert f.time_base == fractions.Fraction(1, 48_000) and f.layout.name == "mono"
    got = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    assert np.array_equal(got, np.arange(4800, dtype=np.int16))  # the bytes, in order


def test_microphone_backlog_drops_oldest_but_keeps_capture_time() -> None:
    async def scenario() -> tuple[list[int], int]:
        capture = PcmCapture(FakeMic(16_000, blocks=30), 16_000, max_backlog=4)
        capture.start()
        thread = capture._thread
        assert thread is not None  # the consumer lags: the reader runs through all 30 blocks
        await eventually(lambda: not thread.is_alive(), what="the reader to reach the end")
        pts = []
        with pytest.raises(EOFError):
            while True:
                pts.append((await capture.read())[1])
        capture.join()
        return pts, capture.dropped_frames

    pts, dropped = asyncio.run(scenario())
    assert pts == [26 * 320, 27 * 320, 28 * 320, 29 * 320]  # the newest 4, at their capture pts
    assert dropped == 26


def test_microphone_stop_ends_the_reader_thread() -> None:
    async def scenario() -> PcmCapture:
        capture = PcmCapture(FakeMic(16_000, blocks=10_000, pace=0.005), 16_000)
        track = microphone_track(capture)
        await track.recv()
        track.stop()
        capture.join(timeout=2)
        return capture

    capture = asyncio.run(scenario())
    assert capture._thread is not None and not capture._thread.is_alive()


def test_playout_buffer_is_bounded_and_pads_with_silence() -> None:
    buf = PlayoutBuffer(bytes_per_second=32_000, max_seconds=0.25)  # 16 kHz s16 mono
    assert buf.max_bytes == 8000
    buf.write(b"\x01\x00" * 3000)  # 6000 bytes
    buf.write(b"\x02\x00" * 2000)  # 4000 more: the oldest 2000 go
    assert len(buf) == 8000 and buf.dropped_bytes == 2000
    assert buf.read(2) == b"\x01\x00"
    buf.read(7996)
    assert buf.read(4) == b"\x02\x00" + b"\x00\x00"  # underrun: silence, never blocking
    assert buf.underruns == 1


def test_pick_device() -> None:
    devices = [
        {"index": 0, "name": "HDA Intel PCH: ALC3246 Analog (hw:0,0)", "maxInputChannels": 2,
         "maxOutputChannels": 2},
        {"index": 1, "name": "USB Audio Headset (hw:1,0)", "maxInputChannels": 1,
         "maxOutputChannels": 0},
        {"index": 2, "name": "HDMI 0 (hw:0,3)", "maxInputChannels": 0, "maxOutputChannels": 8},
    ]
    assert pick_device(devices, None, "input") is None
    assert pick_device(devices, "usb", "input") == 1
    assert pick_device(devices, "2", "output") == 2
    with pytest.raises(TalkError, match="no output device named like 'usb'"):
        pick_device(devices, "usb", "output")
    with pytest.raises(TalkError, match="several input devices"):
        pick_device(devices, "hw:", "input")
    with pytest.raises(TalkError, match="no input device with index 2"):
        pick_device(devices, "2", "input")


def test_missing_pyaudio_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyaudio", None)  # import pyaudio → ImportError
    with pytest.raises(TalkError, match=r"portaudio19-dev.*pyaudio.*make setup"):
        talk.import_pyaudio()


def test_no_audio_device_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """This machine has no sound card: the live path must say so, not crash."""
    pytest.importorskip("pyaudio")
    code = _run(["--server", "http://127.0.0.1:9", "--seconds", "1"])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and "input device" in err


def test_media_timeline_unwraps_rtp_timestamps() -> None:
    tb = fractions.Fraction(1, 90_000)
    tl = MediaTimeline()
    start = (1 << 32) - 3600  # one frame before the 32-bit wrap
    assert tl.seconds(start, tb) == 0.0
    assert tl.seconds(0, tb) == pytest.approx(0.04)
    assert tl.seconds(3600, tb) == pytest.approx(0.08)


def _video(pts: int, value: int) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), value, np.uint8), format="rgb24")
    frame.pts, frame.time_base = pts, fractions.Fraction(1, 90_000)
    return frame


def _audio(pts: int, samples: int = 960) -> av.AudioFrame:
    x = np.full((1, samples * 2), 8000, np.int16)  # stereo s16 at 48 kHz, like Opus decodes
    frame = av.AudioFrame.from_ndarray(x, format="s16", layout="stereo")
    frame.sample_rate, frame.pts = 48_000, pts
    frame.time_base = fractions.Fraction(1, 48_000)
    return frame


def test_recorder_maps_media_time_onto_a_constant_grid(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.mp4")
    origin_v, origin_a = 123_456_789, 987_654
    for k in [0, 1, 2, 2, 6, 7]:  # a duplicate, then three frames lost
        rec.add_video(_video(origin_v + k * 3600, 30 * k))
    for k in [*range(0, 10), *range(20, 25)]:  # 200 ms of audio lost after 200 ms
        rec.add_audio(_audio(origin_a + k * 960))
    assert rec.close()
    assert (rec.frames, rec.repeated, rec.skipped) == (8, 3, 1)
    frames, audio, rate, _ = _decode(tmp_path / "r.mp4")
    assert rate == 25 and len(frames) == 8
    means = [round(float(f.mean())) for f in frames]
    assert means[3:6] == [means[2]] * 3  # the gap shows the last frame, not a time jump
    assert abs(means[6] - 180) < 6
    # 500 ms of audio on the grid: the lost 200 ms became silence in the right place.
    assert abs(len(audio) - 8000) < 1100  # AAC adds priming/padding
    assert np.abs(audio[4000:6000]).max() < 0.05 < np.abs(audio[1000:3000]).min()


def test_recorder_without_video_saves_nothing(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "none.mp4")
    rec.add_audio(_audio(0))
    assert rec.close() is False and not list(tmp_path.iterdir())
