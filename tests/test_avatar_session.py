"""The in-process avatar session that framework plugins use (streamer/integrations)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.waiting import eventually
from vivify.streamer.integrations.avatar_session import LocalAvatars, Resampler, to_mono_float

pytestmark = pytest.mark.slow
IDLE_AFTER = 5  # idle frames streamed after the speech before the test closes the session


def test_pcm_conversion_and_streaming_resampling() -> None:
    pcm = (np.sin(np.arange(4800) / 10) * 12000).astype("<i2")
    assert np.allclose(to_mono_float(pcm.tobytes()), pcm / 32768.0)
    stereo = np.stack([pcm, np.zeros_like(pcm)], axis=1).reshape(-1)
    assert np.allclose(to_mono_float(stereo, channels=2), pcm / 65536.0, atol=1e-4)
    bad = np.array([np.nan, np.inf, -np.inf, 3.0, -0.5], np.float32)
    assert to_mono_float(bad).tolist() == [0.0, 0.0, 0.0, 1.0, -0.5]
    resample = Resampler()  # 48 kHz in 20 ms chunks → 16 kHz, no samples lost or invented
    chunks = [resample(np.zeros(960, np.float32), 48000) for _ in range(50)]
    total = sum(c.size for c in chunks)
    assert abs(total - 16000) <= 64 and all(c.dtype == np.float32 for c in chunks)


def test_local_session_plays_speech_in_sync_and_reports_playback(face_models: Path,
                                                                 tmp_path: Path) -> None:
    async def scenario() -> tuple[list[Any], list[dict[str, Any]]]:
        avatars = await LocalAvatars.start(home=tmp_path)
        try:
            session = await avatars.open()
            tone = (np.sin(2 * np.pi * 220 * np.arange(24000) / 24000) * 0.3).astype(np.float32)
            session.push_audio(tone, sample_rate=24000)  # 1 s at 24 kHz
            session.segment_end()
            pairs: list[Any] = []
            events: list[dict[str, Any]] = []

            async def collect_pairs() -> None:
                async for pair in session.pairs():
                    pairs.append(pair)

            async def collect_events() -> None:
                async for event in session.events():
                    events.append(event)

            def played_out() -> bool:  # the speech ended, and idle frames follow it
                finished = any(e["type"] == "playback_finished" for e in events)
                last_live = max((i for i, p in enumerate(pairs) if p.live), default=len(pairs))
                return finished and len(pairs) - last_live > IDLE_AFTER

            tasks = [asyncio.create_task(collect_pairs()), asyncio.create_task(collect_events())]
            await eventually(played_out, 20, "the speech to play and the face to go idle")
            await session.aclose()
            await asyncio.wait_for(asyncio.gather(*tasks), 5)
            return pairs, events
        finally:
            await avatars.aclose()

    pairs, events = asyncio.run(scenario())
    assert all(p.image.shape == (512, 512, 3) and p.audio.shape == (640,) for p in pairs)
    live = [p for p in pairs if p.live]
    assert 23 <= len(live) <= 27  # one second of speech = 25 frames carrying it
    assert not any(p.live for p in pairs[-IDLE_AFTER:])  # then the idle face, still streaming
    assert np.abs(np.concatenate([p.audio for p in live])).max() > 3000
    kinds = [e["type"] for e in events]
    assert kinds[0] == "playback_started" and "playback_finished" in kinds
    finished = next(e for e in events if e["type"] == "playback_finished")
    assert not finished["interrupted"] and abs(finished["position_ms"] - 1000) <= 40
    assert events[-1]["code"] == "session_closed"
