"""``vivify verify``: files in, exit status and JSON out.

Marked files are written the way the product writes them (``Mp4Writer`` for MP4; PyAV for
WebM/VP8 as a browser recording would be; Pillow for stills), then verified from disk and from
an in-memory upload.
"""

from __future__ import annotations

import argparse
import io
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests.test_watermark import camera_clip, render_clip, skimage_image
from vivify.engines.provenance.watermark import Watermarker, session_payload
from vivify.streamer.offline.verify import (
    EXIT_MARKED,
    EXIT_NOT_MARKED,
    EXIT_UNREADABLE,
    VerifyInputError,
    add_verify_parser,
    verify_file,
)
from vivify.streamer.offline.video_writer import Mp4Writer

SESSION = "verify-session"
FPS = 25


def run_cli(argv: list[str]) -> int:
    """The subcommand as ``vivify`` will mount it: a parser with subparsers."""
    parser = argparse.ArgumentParser(prog="vivify")
    add_verify_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["verify", *argv])
    return int(args.func(args))


@pytest.fixture(scope="module")
def clip(renderer) -> list[np.ndarray]:
    return render_clip(renderer, n=60, seed=7)


@pytest.fixture(scope="module")
def files(clip: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("verify")
    wm = Watermarker(session_payload(SESSION))
    marked = [wm.apply(f, i) for i, f in enumerate(clip)]
    out = {}
    for name, frames in (("marked.mp4", marked), ("plain.mp4", clip)):
        with Mp4Writer(root / name, width=512, height=512, audio_rate=None) as w:
            for f in frames:
                w.write_frame(f)
        out[name] = root / name
    out["marked.webm"] = write_webm(root / "marked.webm", marked)
    Image.fromarray(marked[10]).save(root / "marked.png")
    Image.fromarray(marked[10]).save(root / "marked_q50.jpg", quality=50)
    Image.fromarray(clip[10]).save(root / "plain.jpg", quality=90)
    for name in ("marked.png", "marked_q50.jpg", "plain.jpg"):
        out[name] = root / name
    return out


def write_webm(path: Path, frames: list[np.ndarray], bitrate: int = 500_000) -> Path:
    with av.open(str(path), "w", format="webm") as out:
        st = out.add_stream("libvpx", rate=FPS, options={"deadline": "realtime", "threads": "1"})
        assert isinstance(st, av.VideoStream)
        st.width, st.height, st.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        st.bit_rate = bitrate
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, FPS)
            for p in st.encode(vf):
                out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    return path


@pytest.mark.parametrize("name", ["marked.mp4", "marked.webm", "marked.png", "marked_q50.jpg"])
def test_marked_files(name: str, files: dict[str, Path],
                      capsys: pytest.CaptureFixture[str]) -> None:
    r = verify_file(files[name])
    assert r.marked and r.session == session_payload(SESSION).session_hex
    assert r.kind == ("image" if name.endswith(("png", "jpg")) else "video")
    assert r.confidence > 0.999 and r.false_alarm < 1e-3
    assert run_cli([str(files[name])]) == EXIT_MARKED
    assert "MARKED" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["plain.mp4", "plain.jpg"])
def test_unmarked_files(name: str, files: dict[str, Path]) -> None:
    r = verify_file(files[name])
    assert not r.marked and r.session is None
    assert run_cli([str(files[name])]) == EXIT_NOT_MARKED


def test_json_output(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli([str(files["marked.mp4"]), "--json"]) == EXIT_MARKED
    doc = json.loads(capsys.readouterr().out)
    assert doc["marked"] is True and doc["session"] == session_payload(SESSION).session_hex
    assert doc["kind"] == "video" and doc["frames"] == 60 and doc["width"] == 512
    assert {"confidence", "false_alarm", "score", "threshold", "seconds", "scale"} <= set(doc)


def test_upload_bytes(files: dict[str, Path]) -> None:
    """The server's path: the uploaded body as a file object, no temporary file."""
    for name in ("marked.mp4", "marked_q50.jpg"):
        r = verify_file(io.BytesIO(files[name].read_bytes()))
        assert r.marked and r.file == "<upload>"


def test_reading_is_bounded(files: dict[str, Path]) -> None:
    r = verify_file(files["marked.mp4"], max_seconds=1.0)
    assert r.frames == FPS and r.seconds == pytest.approx(1.0) and r.marked
    assert verify_file(files["marked.mp4"], max_frames=5).frames == 5


def test_unreadable_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tiny)
    audio_only = tmp_path / "tone.wav"
    with av.open(str(audio_only), "w") as out:
        st = out.add_stream("pcm_s16le", rate=16_000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = 16_000
        for p in [*st.encode(frame), *st.encode(None)]:
            out.mux(p)
    for path in (garbage, empty, tiny, audio_only, tmp_path / "missing.mp4", tmp_path):
        with pytest.raises(VerifyInputError):
            verify_file(path)
        assert run_cli([str(path)]) == EXIT_UNREADABLE
        assert "vivify verify:" in capsys.readouterr().err
    assert run_cli([str(garbage), "--json"]) == EXIT_UNREADABLE
    assert "error" in json.loads(capsys.readouterr().out)


def test_camera_footage_is_not_marked(tmp_path: Path) -> None:
    """A camera-like clip written by the same writer: the writer alone adds no mark."""
    frames = camera_clip(skimage_image("chelsea"), n=50, size=(288, 512), seed=2)
    with Mp4Writer(tmp_path / "cam.mp4", width=512, height=288, audio_rate=None) as w:
        for f in frames:
            w.write_frame(f)
    assert run_cli([str(tmp_path / "cam.mp4")]) == EXIT_NOT_MARKED
