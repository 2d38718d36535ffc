"""espeak-ng, the one place it is called: the demo voice, test speech and bench sentences.

espeak-ng (Debian ``espeak-ng``) is offline and fast, which makes it the built-in demo voice
for presenter mode and the source of every generated test and benchmark sentence. It is a
robotic voice; a real deployment has its agent's TTS push PCM over the session WebSocket.

One module so the command line, its timeout and its errors are written once: the server's
``say`` message, ``vivify demo``, the tests' fixtures and the benchmarks all come here. The
training corpus drives espeak-ng through its C library instead (``export/data/synth.py``:
phone events need the library's callback), which is a different interface, not a copy.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from vivify.engines.audio.audio_io import load_audio

EXECUTABLE = "espeak-ng"
TIMEOUT_S = 30.0
DEFAULT_VOICE = "en-us"
DEFAULT_SPEED = 150  # words per minute (espeak-ng's own default is 175)
MIN_WAV_BYTES = 44  # a RIFF header and no samples: espeak-ng said nothing


class VoiceUnavailable(RuntimeError):
    """espeak-ng is not installed."""

    code = "voice_unavailable"


class VoiceFailed(RuntimeError):
    """espeak-ng ran and failed, timed out, or wrote no audio."""

    code = "voice_failed"


def available() -> bool:
    """Whether espeak-ng is on PATH (tests skip without it)."""
    return shutil.which(EXECUTABLE) is not None


def _command(text: str, wav: Path, voice: str, speed: int) -> list[str]:
    exe = shutil.which(EXECUTABLE)
    if exe is None:
        raise VoiceUnavailable("espeak-ng is needed for this voice (Debian: apt-get install "
                               "espeak-ng; `make setup` installs it)")
    # "--" ends the options: a text starting with "-" is spoken, not parsed as a flag.
    return [exe, "-v", voice, "-s", str(int(speed)), "-w", str(wav), "--", text]


def _check(wav: Path, returncode: int, stderr: bytes) -> None:
    if returncode != 0:
        raise VoiceFailed(f"espeak-ng failed: {stderr.decode(errors='replace').strip()[:200]}")
    if not wav.is_file() or wav.stat().st_size <= MIN_WAV_BYTES:
        raise VoiceFailed("espeak-ng wrote no audio")


def speak_to_wav(text: str, path: str | Path, voice: str = DEFAULT_VOICE,
                 speed: int = DEFAULT_SPEED, timeout: float = TIMEOUT_S) -> Path:
    """``text`` spoken into a wav file at ``path`` (espeak-ng's 22.05 kHz mono int16)."""
    wav = Path(path)
    cmd = _command(text, wav, voice, speed)
    try:
        run = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise VoiceFailed(f"espeak-ng took over {timeout:g} s") from None
    _check(wav, run.returncode, run.stderr)
    return wav


def speak(text: str, voice: str = DEFAULT_VOICE, speed: int = DEFAULT_SPEED,
          timeout: float = TIMEOUT_S) -> np.ndarray:
    """``text`` spoken as 16 kHz mono float32 (the engines' rate)."""
    with tempfile.TemporaryDirectory(prefix="vivify-espeak-") as tmp:
        return load_audio(speak_to_wav(text, Path(tmp) / "speech.wav", voice, speed, timeout))


async def synthesize(text: str, voice: str = DEFAULT_VOICE,
                     speed: int = DEFAULT_SPEED) -> np.ndarray:
    """:func:`speak` without blocking the event loop (the server's ``say`` message)."""
    with tempfile.TemporaryDirectory(prefix="vivify-espeak-") as tmp:
        wav = Path(tmp) / "speech.wav"
        cmd = _command(text, wav, voice, speed)
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise VoiceFailed(f"espeak-ng took over {TIMEOUT_S:g} s") from None
        _check(wav, proc.returncode or 0, err)
        return await asyncio.to_thread(load_audio, wav)
