"""Mp4Writer: what comes out reads back as written, and failures leave no file behind."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tests.support import media
from vivify.streamer.offline.video_writer import Mp4Writer

W, H, FPS, RATE = 128, 96, 25, 16_000
SECONDS = 2


def _frame(k: int) -> np.ndarray:
    """A smooth gradient that moves: compresses like a face, and frames differ."""
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([(x * 2 + k * 3) % 256, (y * 2) % 256, np.full_like(x, 128)], axis=-1)
    return rgb.astype(np.uint8)


def _write(path: Path, metadata: dict[str, str] | None = None) -> None:
    tone = media.sine(440.0, SECONDS, RATE, dbfs=-20.0)
    spf = RATE // FPS
    with Mp4Writer(path, width=W, height=H, fps=FPS, audio_rate=RATE,
                   metadata=metadata) as writer:
        for k in range(SECONDS * FPS):
            writer.write_frame(_frame(k))
            writer.write_audio(tone[k * spf : (k + 1) * spf])
        assert writer.frames_written == SECONDS * FPS
        assert writer.audio_samples_written == SECONDS * RATE


def _leftovers(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith("."))


def test_round_trip_frames_size_rate_audio_and_metadata(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    _write(out, metadata={"vivify_rig": "rig-1", "title": "test render"})
    assert out.is_file()
    assert not _leftovers(tmp_path)
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264"
        assert (video.width, video.height) == (W, H)
        assert video.average_rate == FPS
        assert audio.codec_context.name == "aac"
        assert audio.duration is not None and audio.time_base is not None
        assert float(audio.duration * audio.time_base) == pytest.approx(SECONDS, abs=0.1)
        meta = container.metadata
        assert "AI-generated" in meta["comment"]
        assert meta["vivify_rig"] == "rig-1"
        assert meta["title"] == "test render"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == SECONDS * FPS
    # lossy, but the picture is the picture we wrote
    assert np.abs(frames[10].astype(int) - _frame(10).astype(int)).mean() < 6


def test_audio_decodes_back_in_sync_and_at_level(tmp_path: Path) -> None:
    from vivify.engines.audio.audio_io import load_audio

    out = tmp_path / "out.mp4"
    _write(out)
    audio = load_audio(out)
    assert audio.size == pytest.approx(SECONDS * RATE, abs=1100)  # AAC pads to 1024 frames
    assert media.rms_dbfs(audio[4000:-4000]) == pytest.approx(-20.0, abs=1.0)


def test_exception_inside_with_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="boom"), \
            Mp4Writer(out, width=W, height=H) as writer:
        writer.write_frame(_frame(0))
        raise RuntimeError("boom")
    assert not out.exists()
    assert not _leftovers(tmp_path)


def test_abort_and_double_close(tmp_path: Path) -> None:
    aborted = Mp4Writer(tmp_path / "a.mp4", width=W, height=H)
    aborted.write_frame(_frame(0))
    aborted.abort()
    aborted.abort()
    aborted.close()  # no-op after abort: no file appears
    assert not (tmp_path / "a.mp4").exists()
    with pytest.raises(ValueError, match="closed"):
        aborted.write_frame(_frame(1))

    done = Mp4Writer(tmp_path / "b.mp4", width=W, height=H, audio_rate=None)
    done.write_frame(_frame(0))
    done.close()
    done.close()
    assert (tmp_path / "b.mp4").is_file()
    assert not _leftovers(tmp_path)
    with av.open(str(tmp_path / "b.mp4")) as container:
        assert not container.streams.audio


def test_existing_file_is_kept_until_the_new_one_is_complete(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous render")
    with pytest.raises(KeyboardInterrupt), Mp4Writer(out, width=W, height=H) as writer:
        writer.write_frame(_frame(0))
        raise KeyboardInterrupt
    assert out.read_bytes() == b"previous render"


@pytest.mark.parametrize(("width", "height", "fps", "crf", "field"), [
    (127, 96, 25, 20, "width"), (128, 0, 25, 20, "height"), (128, 96, 0, 20, "fps"),
    (128, 96, 25, 99, "crf"),
])
def test_bad_settings_are_refused_before_any_file_exists(
    tmp_path: Path, width: int, height: int, fps: int, crf: int, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        Mp4Writer(tmp_path / "x.mp4", width=width, height=height, fps=fps, crf=crf)
    assert not list(tmp_path.iterdir())


def test_wrong_frame_or_audio_shapes_are_refused(tmp_path: Path) -> None:
    with Mp4Writer(tmp_path / "x.mp4", width=W, height=H) as writer:
        with pytest.raises(ValueError, match="uint8"):
            writer.write_frame(np.zeros((H, W, 3), np.float32))
        with pytest.raises(ValueError, match=r"\(96, 128, 3\)"):
            writer.write_frame(np.zeros((W, H, 3), np.uint8))
        with pytest.raises(ValueError, match="mono"):
            writer.write_audio(np.zeros((2, 100), np.float32))
        writer.write_frame(_frame(0))
