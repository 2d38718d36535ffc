"""A Vivify avatar in a local Pipecat pipeline: text → espeak-ng → Vivify → an MP4.

    pip install '.[pipecat]'          # and the espeak-ng binary (Debian: apt-get install espeak-ng)
    python examples/pipecat_avatar.py --text "Hello there, nice to meet you." --out clip.mp4

The pipeline is the one a voice agent uses, with the network cut off at both ends:
``EspeakTTS`` stands in for a TTS service (it turns ``TTSSpeakFrame``/``TextFrame`` into
``TTSStartedFrame``, 20 ms ``TTSAudioRawFrame`` chunks and ``TTSStoppedFrame``, exactly what a
real one emits), ``VivifyVideoService`` runs the engines in this process, and ``Mp4Sink`` stands
in for the output transport, writing each frame and its 40 ms of audio to ``--out``.

Beside the clip it writes ``<out>.wav``: the speech as the sink received it, on the clip's own
timeline (the rest before and after included), which is what a lip-sync judge compares the
mouth with. The clip starts and ends with half a second of the face at rest.
Exit status: 0 written, 1 the pipeline produced no video, 2 bad input (no espeak-ng, no text).
The voice is Vivify's own demo voice (:mod:`vivify.engines.audio.espeak`), at the engines' rate.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    OutputImageRawFrame,
    SpeechOutputAudioRawFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from vivify.engines.audio import espeak
from vivify.engines.audio.audio_io import float_to_pcm16, pcm16_to_float
from vivify.streamer.integrations.pipecat import VivifyVideoService
from vivify.streamer.offline.video_writer import Mp4Writer

RATE = 16_000  # the sink writes the engines' rate: no resampling between service and file
REST_S = 0.5  # face at rest before and after the speech
CHUNK_S = 0.02  # TTS services push ~20 ms chunks
SPEECH_TIMEOUT_S = 120.0


class EspeakTTS(FrameProcessor):
    """A TTS service stand-in: espeak-ng synthesizes, the frames are a real TTS's."""

    def __init__(self, voice: str = espeak.DEFAULT_VOICE,
                 speed: int = espeak.DEFAULT_SPEED) -> None:
        super().__init__()
        self.voice, self.speed = voice, speed

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSSpeakFrame) or type(frame) is TextFrame:
            await self._speak(frame.text)
        else:
            await self.push_frame(frame, direction)

    async def _speak(self, text: str) -> None:
        # 16 kHz float32 off the event loop, pushed as PCM16 the way a TTS service sends it
        pcm = float_to_pcm16(await espeak.synthesize(text, self.voice, self.speed))
        await self.push_frame(TTSStartedFrame())
        step = 2 * int(RATE * CHUNK_S)  # bytes: two per sample
        for i in range(0, len(pcm), step):
            await self.push_frame(TTSAudioRawFrame(audio=pcm[i:i + step], sample_rate=RATE,
                                                   num_channels=1))
        await self.push_frame(TTSStoppedFrame())


class Mp4Sink(FrameProcessor):
    """The output transport's stand-in: each image and the audio pushed after it go to the
    MP4 (frame k at k/25 s, sample n at n/16000 s: in sync by construction)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.writer: Mp4Writer | None = None
        self.audio: list[bytes] = []  # s16le, for the wav

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputImageRawFrame):
            width, height = frame.size
            if self.writer is None:
                self.writer = Mp4Writer(self.path, width=width, height=height, audio_rate=RATE)
            self.writer.write_frame(np.frombuffer(frame.image, np.uint8).reshape(height, width, 3))
        elif isinstance(frame, SpeechOutputAudioRawFrame) and self.writer is not None:
            self.writer.write_audio(pcm16_to_float(frame.audio))
            self.audio.append(frame.audio)
        else:
            await self.push_frame(frame, direction)

    def close(self) -> int:
        """Finish the file; the number of frames written."""
        if self.writer is None:
            return 0
        self.writer.close()
        with wave.open(str(self.path.with_suffix(".wav")), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(b"".join(self.audio))
        return self.writer.frames_written


async def run(text: str, out: Path, voice: str) -> int:
    service = VivifyVideoService(audio_out_sample_rate=RATE)
    sink = Mp4Sink(out)
    worker = PipelineWorker(Pipeline([EspeakTTS(voice), service, sink]),
                            params=PipelineParams(audio_out_sample_rate=RATE))
    finished = asyncio.Event()

    @service.event_handler("on_playback_finished")
    async def on_finished(_service: Any, event: dict[str, Any]) -> None:
        finished.set()

    @worker.event_handler("on_pipeline_started")
    async def on_started(_worker: Any, _frame: Frame) -> None:
        worker.create_task(script())

    async def script() -> None:
        await asyncio.sleep(REST_S)
        await worker.queue_frame(TTSSpeakFrame(text))
        try:
            await asyncio.wait_for(finished.wait(), SPEECH_TIMEOUT_S)
            await asyncio.sleep(REST_S)
        finally:
            await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()
    frames = sink.close()
    print(f"{out}: {frames} frames ({frames / 25:.2f} s), speech in {out.with_suffix('.wav')}")
    return 0 if frames else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", required=True, help="what the avatar says")
    parser.add_argument("--out", type=Path, default=Path("clip.mp4"), help="the MP4 to write")
    parser.add_argument("--voice", default=espeak.DEFAULT_VOICE,
                        help="espeak-ng voice (espeak-ng --voices)")
    args = parser.parse_args(argv)
    if not args.text.strip():
        print("error: --text is empty", file=sys.stderr)
        return 2
    if not espeak.available():
        print("error: espeak-ng is not installed (Debian: apt-get install espeak-ng)",
              file=sys.stderr)
        return 2
    return asyncio.run(run(args.text, args.out, args.voice))


if __name__ == "__main__":
    sys.exit(main())
