"""The built-in demo voice: espeak-ng, offline. For trying presenter mode without an agent.

It is a demo voice (robotic, as espeak-ng is); a real deployment has its agent's TTS push
PCM over the session WebSocket instead.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import numpy as np

from vivify.engines.audio.audio_io import load_audio
from vivify.streamer.server.errors import ApiError

SPEAK_TIMEOUT_S = 30.0


async def synthesize(text: str, voice: str = "en-us", speed: int = 150) -> np.ndarray:
    """``text`` spoken by espeak-ng as 16 kHz mono float32."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ApiError("the demo voice needs espeak-ng (make setup installs it)",
                       code="voice_unavailable", status=503)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        proc = await asyncio.create_subprocess_exec(
            exe, "-v", voice, "-s", str(speed), "-w", str(wav), "--", text,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), SPEAK_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            raise ApiError("speech synthesis timed out", code="voice_failed", status=500) \
                from None
        if proc.returncode != 0 or not wav.exists():
            raise ApiError(f"espeak-ng failed: {err.decode(errors='replace').strip()[:200]}",
                           code="voice_failed", status=422)
        return await asyncio.to_thread(load_audio, wav)
