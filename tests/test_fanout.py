"""The broadcast fan-out (streamer/rtc/fanout.py): one encode per frame for every viewer.

In memory: a stand-in for the session's media hands the fan-out pairs one by one, and each
viewer is its track read the way aiortc's sender reads it. Waits are for a condition, with a
generous timeout (no speed requirement).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from tests.support.waiting import eventually
from vivify.engines.audio.audio_io import SAMPLES_PER_FRAME
from vivify.streamer.media.pairs import FPS, AVPair, PairHub
from vivify.streamer.rtc.fanout import VIEWER_QUEUE, EncodedVideoTrack, VideoFanout

RECV_TIMEOUT_S = 10.0  # bounds a stuck read; no speed requirement
VIDEO_TICKS = 90_000 // FPS
SIZE = 64


class PairSource(PairHub):
    """What the fan-out needs of a session's media (subscribe, unsubscribe, pairs), with pairs
    played on demand instead of by a ticker."""

    def play(self, slot: int) -> None:
        rng = np.random.default_rng(slot)
        image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        self.publish(AVPair(slot, image, np.zeros(SAMPLES_PER_FRAME, np.int16), True))

    def consumed(self) -> bool:
        """The fan-out has taken every pair played so far."""
        return all(sub.video.empty() for sub in self.subscribers)


def _viewer(fanout: VideoFanout, source: PairSource) -> EncodedVideoTrack:
    """A viewer as the session adds one: its audio subscriber, its encoded video track."""
    return fanout.attach(source.subscribe(video=False))


async def _recv(track: EncodedVideoTrack) -> Any:
    return await asyncio.wait_for(track.recv(), RECV_TIMEOUT_S)


async def _ended(tracks: list[EncodedVideoTrack]) -> int:
    """How many of ``tracks`` answer their next read with the end of the stream."""
    ended = 0
    for track in tracks:
        try:
            await _recv(track)
        except MediaStreamError:
            ended += 1
    return ended


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_every_viewer_gets_the_same_packets_from_one_encode(codec: str) -> None:
    async def scenario() -> tuple[list[list[Any]], int]:
        source = PairSource()
        fanout = VideoFanout(source, codec)  # type: ignore[arg-type]
        viewers = [_viewer(fanout, source) for _ in range(3)]
        got: list[list[Any]] = [[] for _ in viewers]
        for slot in range(5):
            source.play(slot)
            for i, track in enumerate(viewers):
                got[i].append(await _recv(track))
        encoded = fanout.frames_encoded
        await fanout.aclose()
        return got, encoded

    got, encoded = asyncio.run(scenario())
    assert encoded == 5  # once per frame, not once per viewer
    payloads = [[bytes(p) for p in packets] for packets in got]
    assert payloads[0] == payloads[1] == payloads[2]
    assert all(payloads[0])
    for packets in got:
        assert [p.pts for p in packets] == [i * VIDEO_TICKS for i in range(5)]


def test_a_viewer_that_does_not_read_does_not_stall_the_others() -> None:
    async def scenario() -> tuple[list[Any], int, Any]:
        source = PairSource()
        fanout = VideoFanout(source, "vp8")  # type: ignore[arg-type]
        stalled, reader = _viewer(fanout, source), _viewer(fanout, source)
        received = []
        for slot in range(3 * VIEWER_QUEUE):
            source.play(slot)
            received.append(await _recv(reader))
        backlog = stalled.queue.qsize()
        late = await _recv(stalled)  # it resyncs on a keyframe when it reads again
        await fanout.aclose()
        return received, backlog, late

    received, backlog, late = asyncio.run(scenario())
    assert len(received) == 3 * VIEWER_QUEUE
    assert [p.pts for p in received] == [i * VIDEO_TICKS for i in range(3 * VIEWER_QUEUE)]
    assert backlog == VIEWER_QUEUE  # bounded: its oldest frames were dropped, not queued
    assert late.pts == 0 and bytes(late)  # its own timeline starts where it starts reading


def test_a_removed_viewer_leaves_the_others_and_the_last_one_stops_the_encodes() -> None:
    async def scenario() -> tuple[list[Any], int, int, bool]:
        source = PairSource()
        fanout = VideoFanout(source, "vp8")  # type: ignore[arg-type]
        leaving, staying = _viewer(fanout, source), _viewer(fanout, source)
        source.play(0)
        await _recv(leaving)
        await _recv(staying)
        leaving.stop()
        after = []
        for slot in (1, 2):
            source.play(slot)
            after.append(await _recv(staying))
        with pytest.raises(MediaStreamError):
            await _recv(leaving)  # a stopped track stays stopped
        staying.stop()
        encoded = fanout.frames_encoded
        source.play(3)
        await eventually(source.consumed, what="the fan-out to take the pair")
        skipped = fanout.frames_encoded
        await fanout.aclose()
        return after, encoded, skipped, bool(fanout.tracks)

    after, encoded, skipped, left = asyncio.run(scenario())
    assert [p.pts for p in after] == [VIDEO_TICKS, 2 * VIDEO_TICKS]
    assert encoded == 3 and skipped == 3  # nobody watching: nothing encoded
    assert not left


def test_closing_the_fanout_ends_every_viewer_and_unsubscribes() -> None:
    async def scenario() -> tuple[int, int]:
        source = PairSource()
        fanout = VideoFanout(source, "vp8")  # type: ignore[arg-type]
        viewers = [_viewer(fanout, source) for _ in range(2)]
        source.play(0)
        for track in viewers:
            await _recv(track)
        before = len(source.subscribers)
        await fanout.aclose()
        return before - len(source.subscribers), await _ended(viewers)

    unsubscribed, ended = asyncio.run(scenario())
    assert unsubscribed == 1  # the encoder's own subscription
    assert ended == 2


def test_the_end_of_the_sessions_stream_ends_every_viewer() -> None:
    async def scenario() -> int:
        source = PairSource()
        fanout = VideoFanout(source, "vp8")  # type: ignore[arg-type]
        viewers = [_viewer(fanout, source) for _ in range(2)]
        for sub in source.subscribers:
            sub.offer(None)  # the media closed
        ended = await _ended(viewers)
        await fanout.aclose()
        return ended

    assert asyncio.run(scenario()) == 2
