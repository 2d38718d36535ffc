"""The Pipecat video service (streamer/integrations/pipecat.py), end to end and offline.

Driven with Pipecat's own test utilities (``run_test``): TTS frames in, the avatar's frames and
its audio out. In-process engines, a real ``vivify serve`` over its API (remote backend), and a
``SmallWebRTCTransport`` call answered to an aiortc peer in the test.
"""

from __future__ import annotations

import asyncio
import fractions
import subprocess
import sys
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

pytest.importorskip("pipecat")

import soxr
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    SpeechOutputAudioRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from tests.support.live_server import LiveServer
from tests.support.media import espeak_wav, have_espeak
from tests.support.rtc import TrackRecorder
from tests.support.video import mouth_activity
from tests.support.waiting import POLL_S, WaitTimedOut, grown_by
from vivify.streamer.integrations.avatar_session import LocalAvatars
from vivify.streamer.integrations.pipecat import FrameAudio, SpeechIn, VivifyVideoService
from vivify.streamer.server.config import ServerConfig

pytestmark = pytest.mark.slow
needs_espeak = pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed")
CHUNK_S = 0.02  # TTS services push ~20 ms chunks
START_TIMEOUT = 20.0  # run_test's wait for the pipeline (the service's setup starts engines)
WAIT_S = 20.0  # the longest a script waits for what it expects (a stuck-test bound)


class Stamp(FrameProcessor):
    """Records each frame pushed to it, in order. Direct mode: no queue of its own, so an
    interruption cannot drop or reorder what it records."""

    def __init__(self) -> None:
        super().__init__(enable_direct_mode=True)
        self.log: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.log.append(frame)
        await self.push_frame(frame, direction)

    def audio_out(self) -> int:
        """How many audio frames the service pushed so far (one per 40 ms it played)."""
        return sum(isinstance(f, SpeechOutputAudioRawFrame) for f in self.log)


@dataclass
class Until:
    """A step of a :func:`script`: hold the next frames until ``cond()`` holds."""

    cond: Callable[[], bool]
    what: str


def script(*steps: Frame | Until | Sequence[Frame]) -> Sequence[Frame]:
    """``frames_to_send`` for Pipecat's ``run_test`` that waits for conditions, not for time.

    ``run_test`` sends its frames in order and sleeps for a ``SleepFrame``; it only iterates
    what it is given, so a lazy iterator can poll (short ``SleepFrame`` s) until a condition
    holds: "after one second of speech has played" becomes 25 audio frames out, whatever the
    machine's speed. A condition that never holds fails the test after :data:`WAIT_S`.
    """
    def frames() -> Iterator[Frame]:
        for step in steps:
            if isinstance(step, Until):
                deadline = time.monotonic() + WAIT_S
                while not step.cond():
                    if time.monotonic() > deadline:
                        raise WaitTimedOut(f"timed out after {WAIT_S:g} s: {step.what}")
                    yield SleepFrame(POLL_S)
            elif isinstance(step, Frame):
                yield step
            else:
                yield from step

    return cast(Sequence[Frame], frames())  # run_test only iterates it


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, int]:
    """espeak-ng speech as a TTS would send it: int16 mono at 22.05 kHz."""
    path = espeak_wav("Hello there. My name is Peter, and I like milk.",
                      tmp_path_factory.mktemp("speech") / "speech.wav")
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").copy(), w.getframerate()


def tts_frames(pcm: np.ndarray, rate: int) -> list[Frame]:
    step = int(rate * CHUNK_S)
    chunks: list[Frame] = [TTSAudioRawFrame(audio=pcm[i:i + step].tobytes(), sample_rate=rate,
                                            num_channels=1) for i in range(0, pcm.size, step)]
    return [TTSStartedFrame(), *chunks, TTSStoppedFrame()]


def expected_16k(pcm: np.ndarray, rate: int) -> np.ndarray:
    """The speech as the session plays it: 16 kHz, padded to whole 40 ms frames, int16."""
    x = soxr.resample(pcm.astype(np.float32) / 32768.0, rate, 16000).astype(np.float32)
    x = np.concatenate([x, np.zeros(-x.size % 640, np.float32)])
    return np.clip(x * 32767.0, -32768, 32767).astype(np.int16)


def outputs(log: list[Frame]) -> tuple[list[Any], list[Any]]:
    """The audio frames and the images, in order."""
    audio = [f for f in log if isinstance(f, SpeechOutputAudioRawFrame)]
    images = [f for f in log if isinstance(f, OutputImageRawFrame)]
    return audio, images


def rgb(frame: Any) -> np.ndarray:
    return np.frombuffer(frame.image, np.uint8).reshape(frame.size[1], frame.size[0], 3)


def finished(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "playback_finished"]


def started(events: list[dict[str, Any]]) -> int:
    return sum(e["type"] == "playback_started" for e in events)


def recorder(service: VivifyVideoService) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for name in ("on_playback_started", "on_playback_finished"):
        @service.event_handler(name)
        async def on_event(_service: Any, event: dict[str, Any]) -> None:
            events.append(event)
    return events


@needs_espeak
def test_tts_audio_in_lip_synced_frames_and_the_same_audio_out(
        face_models: Path, tmp_path: Path, speech: tuple[np.ndarray, int]) -> None:
    pcm, rate = speech

    async def scenario() -> tuple[Stamp, list[dict[str, Any]], float]:
        async with await LocalAvatars.start(home=tmp_path) as avatars:  # shared, not owned
            service = VivifyVideoService(avatars=avatars)
            events, stamp = recorder(service), Stamp()
            t0 = time.monotonic()
            await run_test(Pipeline([service, stamp]), frames_to_send=tts_frames(
                pcm, rate), pipeline_params=PipelineParams(audio_out_sample_rate=16000),
                start_timeout=START_TIMEOUT)
            assert not avatars.manager.sessions  # EndFrame closed the session
            return stamp, events, time.monotonic() - t0

    stamp, events, seconds = asyncio.run(scenario())
    audio, images = outputs(stamp.log)
    kinds = [type(f) for f in stamp.log]
    assert TTSAudioRawFrame not in kinds  # the TTS audio itself never goes past the service
    # paced: never faster than 25 fps (how close to 25 fps a machine keeps is make bench's)
    assert len(images) == len(audio) <= seconds * 25 + 1
    assert all(f.size == (512, 512) and f.format == "RGB" for f in images)
    assert all(f.sample_rate == 16000 and f.num_frames == 640 for f in audio)
    # Each image is pushed right before its audio, and both carry the same slot.
    media = (OutputImageRawFrame, SpeechOutputAudioRawFrame)
    order = [f for f in stamp.log if isinstance(f, media)]
    assert all(isinstance(a, OutputImageRawFrame) and a.metadata["vivify"] == b.metadata["vivify"]
               for a, b in zip(order[::2], order[1::2], strict=True))
    slots = [f.metadata["vivify"]["slot"] for f in audio]
    assert slots == list(range(slots[0], slots[0] + len(slots)))  # every slot, in order
    want = expected_16k(pcm, rate)
    live = [f for f in audio if f.metadata["vivify"]["live"]]
    assert len(live) == want.size // 640  # one frame per 40 ms of speech, no more, no fewer
    got = np.frombuffer(b"".join(f.audio for f in live), "<i2")
    assert np.abs(got.astype(np.int32) - want).max() <= 2  # the same samples, resampled
    assert events[0]["type"] == "playback_started"
    assert events[-1] == {"type": "playback_finished", "position_ms": 40 * len(live),
                          "interrupted": False}
    # TTSStoppedFrame goes on after the audio it closes, not when the TTS sent it.
    stop = kinds.index(TTSStoppedFrame)
    last_live = max(i for i, f in enumerate(stamp.log)
                    if isinstance(f, SpeechOutputAudioRawFrame) and f.metadata["vivify"]["live"])
    assert stop > last_live
    live_images = [rgb(f) for f in images if f.metadata["vivify"]["live"]]
    assert mouth_activity(live_images).max() > 3.0


@needs_espeak
def test_interruption_reaches_the_face_within_two_frames(
        face_models: Path, tmp_path: Path, speech: tuple[np.ndarray, int]) -> None:
    pcm, rate = speech
    config = ServerConfig(max_sessions=2, session_idle_timeout=0)

    async def scenario() -> tuple[Stamp, list[dict[str, Any]]]:
        service = VivifyVideoService(config=config, home=tmp_path)  # owns its engines
        events, stamp = recorder(service), Stamp()
        frames = script(tts_frames(pcm, rate),
                        Until(lambda: started(events) == 1, "the speech started"),
                        Until(grown_by(stamp.audio_out, 25), "1 s of it played"),
                        InterruptionFrame(),
                        Until(grown_by(stamp.audio_out, 12), "0.5 s more streamed"))
        await run_test(Pipeline([service, stamp]), frames_to_send=frames,
                       pipeline_params=PipelineParams(audio_out_sample_rate=24000),
                       start_timeout=START_TIMEOUT)
        return stamp, events

    stamp, events = asyncio.run(scenario())
    cut = next(i for i, f in enumerate(stamp.log) if isinstance(f, InterruptionFrame))
    audio, _ = outputs(stamp.log)
    assert all(f.sample_rate == 24000 and f.num_frames == 960 for f in audio)
    live = [f for f in audio if f.metadata["vivify"]["live"]]
    after = [f.metadata["vivify"]["live"] for f in outputs(stamp.log[cut:])[0]]
    assert len(live) > sum(after)  # speech played before the interrupt...
    # ... and the face went idle within 2 frames (80 ms of media) of it (the wall-clock
    # latency is measured by make bench: bench/loopback.py, interrupt → idle), then stayed
    # idle, still streaming
    assert len(after) >= 12 and sum(after) <= 2 and not any(after[2:])
    assert finished(events) == [{"type": "playback_finished", "position_ms": 40 * len(live),
                                 "interrupted": True}]
    assert 800 <= finished(events)[0]["position_ms"] <= 1400
    assert TTSStoppedFrame not in [type(f) for f in stamp.log]  # it closed speech cut off


@needs_espeak
def test_remote_backend_against_a_running_server(
        face_models: Path, tmp_path: Path, speech: tuple[np.ndarray, int]) -> None:
    pcm, rate = speech
    short = pcm[: int(rate * 0.8)]

    async def scenario(url: str) -> tuple[Stamp, list[dict[str, Any]]]:
        service = VivifyVideoService(url=url, token="pc-token")
        events, stamp = recorder(service), Stamp()
        frames = script(tts_frames(short, rate),
                        Until(lambda: len(finished(events)) == 1, "the first utterance played"),
                        tts_frames(pcm, rate),
                        Until(lambda: started(events) == 2, "the second one started"),
                        Until(grown_by(stamp.audio_out, 25), "1 s of it played"),
                        InterruptionFrame(),
                        Until(grown_by(stamp.audio_out, 12), "0.5 s more streamed"))
        await run_test(Pipeline([service, stamp]), frames_to_send=frames,
                       pipeline_params=PipelineParams(audio_out_sample_rate=16000),
                       start_timeout=START_TIMEOUT)
        return stamp, events

    with LiveServer(tmp_path, "pc-token", max_sessions=2) as server:
        stamp, events = asyncio.run(scenario(server.url))
        assert not server.manager.sessions  # EndFrame deleted the session
    audio, images = outputs(stamp.log)
    # every 40 ms step pushes its image, then its audio; the script waited for the first
    # utterance (0.8 s), 1 s of the second and 0.5 s after the interrupt: at least 57 steps
    # (how many idle steps fall between depends on the machine's timing, not on the service)
    assert len(images) >= len(audio) >= 20 + 25 + 12
    assert all(f.size == (512, 512) for f in images)
    first, second = finished(events)
    assert first == {"type": "playback_finished", "interrupted": False,
                     "position_ms": 40 * (expected_16k(short, rate).size // 640)}
    assert second["interrupted"] and 800 <= second["position_ms"] <= 1400
    # The first utterance came back through Opus: its loudness, frame by frame, is the speech's.
    got = np.frombuffer(b"".join(f.audio for f in audio), "<i2").astype(np.float32)
    env = np.sqrt(np.mean(got[: got.size // 640 * 640].reshape(-1, 640) ** 2, axis=1))
    want = expected_16k(short, rate).astype(np.float32)
    ref = np.sqrt(np.mean(want.reshape(-1, 640) ** 2, axis=1))
    # Best alignment over every offset; a window of received audio that is all silence (the
    # stream can open with silent frames) has no correlation at all, so it is skipped, not nan.
    windows = (env[i:i + ref.size] for i in range(env.size - ref.size + 1))
    corrs = [np.corrcoef(w, ref)[0, 1] for w in windows if w.std() > 0]
    assert corrs and max(corrs) > 0.9
    frames = [rgb(f) for f in images]
    assert mouth_activity(frames).max() > 3.0


@needs_espeak
def test_small_webrtc_call_shows_the_avatar_to_an_aiortc_peer(
        face_models: Path, tmp_path: Path, speech: tuple[np.ndarray, int]) -> None:
    from aiortc import RTCSessionDescription
    from pipecat.transports.base_transport import TransportParams
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

    from vivify.streamer.client import offer_peer

    pcm, rate = speech

    async def scenario() -> tuple[list[np.ndarray], list[np.ndarray], Stamp]:
        peer = offer_peer("broadcast")  # receive-only audio and video, host candidates only
        await peer.setLocalDescription(await peer.createOffer())
        connection = SmallWebRTCConnection(ice_servers=[])
        await connection.initialize(sdp=peer.localDescription.sdp, type="offer")
        answer = connection.get_answer()
        await peer.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        transport = SmallWebRTCTransport(connection, TransportParams(
            audio_out_enabled=True, video_out_enabled=True, video_out_is_live=True,
            video_out_width=512, video_out_height=512, video_out_framerate=25))
        received = TrackRecorder(peer)
        async with await LocalAvatars.start(home=tmp_path) as avatars:
            service, stamp = VivifyVideoService(avatars=avatars), Stamp()
            events = recorder(service)
            frames = script(
                Until(lambda: len(received.video) > 0, "the peer's first frame"),
                tts_frames(pcm, rate),
                Until(lambda: bool(finished(events)), "the speech played"),
                Until(grown_by(lambda: len(received.video), 25), "1 s more reached the peer"))
            await run_test(Pipeline([service, stamp, transport.output()]),
                           frames_to_send=frames, start_timeout=START_TIMEOUT)
        await received.stop()
        await peer.close()
        return received.video, received.audio, stamp

    video, sound, stamp = asyncio.run(scenario())
    _, images = outputs(stamp.log)
    assert len(video) > 50 and video[0].shape == (512, 512, 3)
    sent = rgb(images[len(images) // 2])
    errors = [np.abs(v.astype(np.float32) - sent).mean() for v in video[-25:]]
    assert min(errors) < 12.0  # the avatar's frames, through VP8
    assert mouth_activity(video).max() > 3.0  # ... speaking
    assert np.abs(np.concatenate(sound).astype(np.float32)).max() > 1000  # with its speech


def test_without_pipecat_the_import_error_says_what_to_install() -> None:
    code = ("import sys; sys.modules['pipecat'] = None\n"
            "try:\n    import vivify.streamer.integrations.pipecat\n"
            "except ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "pip install '.[pipecat]'" in out and "pipecat" in out


def test_audio_blocks_in_and_out_keep_whole_frames() -> None:
    speech = SpeechIn()  # 22.05 kHz in 20 ms chunks → 16 kHz, the tail flushed, whole frames
    chunk = (np.sin(np.arange(441) / 5) * 9000).astype("<i2").tobytes()
    got = sum(speech.push(chunk, 22050, 1).size for _ in range(37)) + speech.finish().size
    assert got % 640 == 0 and abs(got - 37 * 320) < 640
    stereo = np.repeat(np.frombuffer(chunk, "<i2"), 2).tobytes()
    assert speech.push(stereo, 16000, 2).size == 441  # channels averaged, no resampling
    for rate in (16000, 24000, 44100, 48000):  # one whole transport chunk per frame, always
        out = FrameAudio(rate)
        sizes = {len(out(np.full(640, 1000, np.int16))) for _ in range(30)}
        assert sizes == {2 * rate // 25}
    with pytest.raises(ValueError):
        FrameAudio(16001)


def test_remote_pairs_follow_the_media_clock_through_loss_and_jitter() -> None:
    import av

    from vivify.streamer.integrations.remote import PairAssembler

    def video(slot: int) -> Any:
        frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), slot, np.uint8), format="rgb24")
        frame.pts, frame.time_base = slot * 3600, fractions.Fraction(1, 90000)
        return frame

    def audio(slot: int) -> Any:  # 40 ms at 48 kHz stereo, its level the slot number
        x = np.full((1, 2 * 1920), 100 * (slot + 1), np.int16)
        frame = av.AudioFrame.from_ndarray(x, format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48000, slot * 1920
        frame.time_base = fractions.Fraction(1, 48000)
        return frame

    pa = PairAssembler(max_wait=0.1)
    for slot in range(4):
        pa.add_video(video(slot), now=0.0)
    assert pa.ready(0.0) == []  # frames wait for their audio...
    for slot in (0, 1, 2):
        pa.add_audio(audio(slot))
    pairs = pa.ready(0.01)
    # Slot 2's last samples may still be in the resampler's filter: it may wait.
    assert [p.slot for p in pairs] in ([0, 1], [0, 1, 2])
    pa.add_video(video(3), now=0.0)  # a duplicate is dropped
    pa.add_video(video(6), now=0.0)  # 4 and 5 were lost: the last frame repeats for them
    pairs += pa.ready(0.5)  # ... and after max_wait the rest goes with what audio there is
    assert [p.slot for p in pairs] == [0, 1, 2, 3, 4, 5, 6]
    assert [int(p.image[0, 0, 0]) for p in pairs] == [0, 1, 2, 3, 3, 3, 6]
    levels = [int(np.median(p.audio)) for p in pairs]
    assert levels[:2] == [100, 200] and levels[3:] == [0, 0, 0, 0]  # no audio: silence
    assert pa.stats["dropped_frames"] == 1 and pa.stats["repeated_frames"] == 2


@needs_espeak
def test_the_example_writes_a_clip_and_its_speech(face_models: Path, tmp_path: Path) -> None:
    import av

    out = tmp_path / "clip.mp4"
    example = Path(__file__).parents[1] / "examples" / "pipecat_avatar.py"
    run = subprocess.run([sys.executable, str(example), "--text", "Hello there.", "--out",
                          str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    with av.open(str(out)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    with wave.open(str(out.with_suffix(".wav"))) as w:
        seconds = w.getnframes() / w.getframerate()
    assert frames == round(seconds * 25) and seconds > 1.0 + 0.5  # speech and the rest around it
