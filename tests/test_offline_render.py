"""End to end: an espeak-ng sentence spoken by the default portrait, through `vivify render`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from tests.support.images import png_bytes
from tests.support.media import espeak_wav
from vivify.engines.audio.audio_io import load_audio
from vivify.engines.avatar import face_topology as ft
from vivify.streamer.offline.render import RenderOptions, render_file
from vivify.streamer.offline.verify import verify_file

VIVIFY = [sys.executable, "-m", "vivify.streamer.cli"]

pytestmark = pytest.mark.slow
SENTENCE = "Peter bought a bottle of milk, and then he sang a song about the sea."


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return espeak_wav(SENTENCE, tmp_path_factory.mktemp("speech") / "speech.wav")


def _frames(path: Path) -> tuple[list[np.ndarray], float, dict[str, str]]:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        audio = c.streams.audio[0]
        seconds = (float(audio.duration * audio.time_base)
                   if audio.duration and audio.time_base else 0.0)
        return frames, seconds, dict(c.metadata)


def test_golden_render_of_a_spoken_sentence(speech: Path, preparer, pack, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    report = render_file(_astronaut_png(tmp_path, pack), speech, out, preparer=preparer)
    duration = len(load_audio(speech)) / 16_000
    frames, audio_seconds, meta = _frames(out)
    assert abs(len(frames) - duration * 25) <= 2
    assert report.frames == len(frames)
    assert frames[0].shape == (512, 512, 3)
    assert abs(audio_seconds - duration) < 0.15
    assert "AI-generated" in meta.get("comment", "")
    assert meta.get("ai_generated") == "true" and report.watermark_session in meta["watermark"]
    found = verify_file(out)  # every frame carries the invisible mark, through H.264
    assert found.marked and found.session == report.watermark_session
    # The mouth moves while the sentence plays, and far more than the background does.
    lm = pack.landmarks
    box = lm[list(ft.LIPS_UPPER_OUTER + ft.LIPS_LOWER_OUTER), :2]
    (x0, y0), (x1, y1) = box.min(0).astype(int) - 5, box.max(0).astype(int) + 30
    mouth = np.stack([f[y0:y1, x0:x1].astype(np.float32).mean() for f in frames])
    corner = np.stack([f[:40, :40].astype(np.float32).mean() for f in frames])
    assert mouth.std() > 4.0
    assert corner.std() < 1.0
    # Golden: the first frame is the portrait at rest plus encoding loss.
    mse = np.mean((frames[0].astype(float) - pack.crop.astype(float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30


def _astronaut_png(tmp_path: Path, pack) -> Path:
    from skimage import data

    path = tmp_path / "astronaut.png"
    path.write_bytes(png_bytes(np.ascontiguousarray(data.astronaut())))
    return path


def test_full_frame_render(speech: Path, preparer, pack, tmp_path: Path) -> None:
    out = tmp_path / "full.mp4"
    render_file(_astronaut_png(tmp_path, pack), speech, out,
                RenderOptions(full_frame=True, emotion="happy", intensity=0.5), preparer=preparer)
    frames, _, _ = _frames(out)
    assert frames[0].shape[:2] == pack.full.shape[:2]


def test_cli_reports_bad_inputs(tmp_path: Path, speech: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a portrait")
    run = subprocess.run([*VIVIFY, "render", "--portrait", str(text),
                          "--audio", str(speech), "-o", str(tmp_path / "x.mp4"), "--quiet"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "not_an_image" in run.stderr
    assert not (tmp_path / "x.mp4").exists()
    run = subprocess.run([*VIVIFY, "render", "--portrait", "default",
                          "--audio", str(text), "-o", str(tmp_path / "y.mp4"), "--quiet"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "audio" in run.stderr.lower()
    assert not (tmp_path / "y.mp4").exists()
    assert not list(tmp_path.glob("*.mp4*"))  # no half-written output left behind


def test_readme_demo_command(tmp_path: Path) -> None:
    """`make run`'s main job, as the README states it."""
    out = tmp_path / "demo.mp4"
    run = subprocess.run([*VIVIFY, "demo", "-o", str(out), "--quiet"],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    assert "demo video:" in run.stdout and out.stat().st_size > 10_000
