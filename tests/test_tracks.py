"""The aiortc tracks that play a session's pairs (streamer/rtc/tracks.py), read in memory.

No peer connection: a test reads ``recv()`` the way aiortc's sender would. Pairs come from a
:class:`Subscriber` fed directly, or from a real :class:`SessionMedia` on the virtual clock.
"""

from __future__ import annotations

import asyncio
import fractions
from typing import Any

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from vivify.engines.audio.audio_io import SAMPLE_RATE, SAMPLES_PER_FRAME
from vivify.engines.motion.baseline import BaselineConfig, BaselineDriver
from vivify.streamer.media.clock import VirtualClock
from vivify.streamer.media.pairs import FPS, AVPair, Subscriber
from vivify.streamer.media.session_media import MediaConfig, SessionMedia
from vivify.streamer.rtc.tracks import AUDIO_PACKET, AvatarAudioTrack, AvatarVideoTrack

VIDEO_TICKS = 90_000 // FPS  # 90 kHz clock ticks per slot
RECV_TIMEOUT_S = 5.0  # bounds a stuck read; no speed requirement


def _pair(slot: int, size: int = 16, live: bool = True) -> AVPair:
    rng = np.random.default_rng(slot)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    audio = (np.arange(SAMPLES_PER_FRAME, dtype=np.int16) + slot * 7).astype(np.int16)
    return AVPair(slot, image, audio, live)


async def _recv(track: Any) -> Any:
    return await asyncio.wait_for(track.recv(), RECV_TIMEOUT_S)


def test_video_frames_count_from_the_first_slot_seen() -> None:
    async def scenario() -> list[Any]:
        sub = Subscriber()
        track = AvatarVideoTrack(sub)
        for slot in (7, 8, 9):
            sub.offer(_pair(slot))
        return [await _recv(track) for _ in range(3)]

    frames = asyncio.run(scenario())
    assert [f.pts for f in frames] == [0, VIDEO_TICKS, 2 * VIDEO_TICKS]
    assert all(f.time_base == fractions.Fraction(1, 90_000) for f in frames)
    for slot, frame in zip((7, 8, 9), frames, strict=True):
        np.testing.assert_array_equal(frame.to_ndarray(format="rgb24"), _pair(slot).image)


def test_audio_plays_each_pair_as_two_20ms_frames() -> None:
    async def scenario() -> list[Any]:
        sub = Subscriber()
        track = AvatarAudioTrack(sub)
        for slot in (3, 4):
            sub.offer(_pair(slot))
        return [await _recv(track) for _ in range(4)]

    frames = asyncio.run(scenario())
    assert [f.pts for f in frames] == [0, AUDIO_PACKET, 2 * AUDIO_PACKET, 3 * AUDIO_PACKET]
    assert all(f.sample_rate == SAMPLE_RATE and f.samples == AUDIO_PACKET for f in frames)
    assert all(f.time_base == fractions.Fraction(1, SAMPLE_RATE) for f in frames)
    got = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    np.testing.assert_array_equal(got, np.concatenate([_pair(3).audio, _pair(4).audio]))


def test_video_and_audio_of_a_slot_carry_the_same_media_time() -> None:
    """One origin for both tracks: a queue that dropped its oldest pairs before being read
    (a slow reader) cannot shift the audio against the video."""
    async def scenario() -> tuple[list[Any], list[Any]]:
        sub = Subscriber()
        video, audio = AvatarVideoTrack(sub), AvatarAudioTrack(sub)
        for slot in range(12):  # more than the queues hold: the oldest are dropped
            sub.offer(_pair(slot))
        vframes = [await _recv(video) for _ in range(3)]
        aframes = [await _recv(audio) for _ in range(6)]
        return vframes, aframes

    vframes, aframes = asyncio.run(scenario())
    video_times = [f.pts / 90_000 for f in vframes]
    audio_times = [f.pts / SAMPLE_RATE for f in aframes[::2]]  # the first half of each pair
    assert video_times == audio_times == [0.0, 0.04, 0.08]


@pytest.mark.parametrize(("track_class", "frames_per_pair"),
                         [(AvatarVideoTrack, 1), (AvatarAudioTrack, 2)])
def test_end_of_stream_ends_the_track(track_class: type, frames_per_pair: int) -> None:
    async def scenario() -> tuple[str, bool]:
        sub = Subscriber()
        track = track_class(sub)
        sub.offer(_pair(0))
        sub.offer(None)
        for _ in range(frames_per_pair):  # the pair before the end still plays
            await _recv(track)
        with pytest.raises(MediaStreamError):
            await _recv(track)
        again = False
        try:
            await _recv(track)
        except MediaStreamError:
            again = True  # an ended track stays ended
        return track.readyState, again

    state, again = asyncio.run(scenario())
    assert state == "ended" and again


class InlineScheduler:
    async def run(self, fn: Any) -> Any:
        return fn()


def test_tracks_play_a_sessions_pairs_on_the_virtual_clock(renderer: Any) -> None:
    """A session's media, played on virtual time: consecutive slots, pts 3600 apart, audio in
    step, then the end of stream when the session closes."""
    async def scenario() -> tuple[list[Any], list[Any], bool, bool]:
        clock = VirtualClock()
        media = SessionMedia(renderer, BaselineDriver(BaselineConfig()),
                             InlineScheduler(), clock,  # type: ignore[arg-type]
                             MediaConfig(live=False))
        sub = media.subscribe()
        video, audio = AvatarVideoTrack(sub), AvatarAudioTrack(sub)
        media.start()
        media.push_audio(np.zeros(8 * SAMPLES_PER_FRAME, np.float32))
        vframes: list[Any] = []
        aframes: list[Any] = []
        for _ in range(6):  # read each slot as it is played (the queues hold only 8)
            await clock.advance(1 / FPS)
            while not sub.video.empty():
                vframes.append(await _recv(video))
            while not sub.audio.empty():
                aframes += [await _recv(audio), await _recv(audio)]
        await media.aclose()
        ended = []
        for track in (video, audio):
            try:
                await _recv(track)
            except MediaStreamError:
                ended.append(True)
        return vframes, aframes, ended == [True, True], media.running

    vframes, aframes, ended, running = asyncio.run(scenario())
    assert len(vframes) >= 5
    assert [f.pts for f in vframes] == [i * VIDEO_TICKS for i in range(len(vframes))]
    assert [f.pts for f in aframes] == [i * AUDIO_PACKET for i in range(len(aframes))]
    assert len(aframes) == 2 * len(vframes)
    assert vframes[0].to_ndarray(format="rgb24").shape == renderer.pack.crop.shape
    assert ended and not running
