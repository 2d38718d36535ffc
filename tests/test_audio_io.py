"""Audio in: every common format decodes to 16 kHz mono float32 of the right length and level,
in bounded memory, and bad input fails with AudioDecodeError."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support import media
from vivify.engines.audio.audio_io import (
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    AudioDecodeError,
    float_to_pcm16,
    iter_audio,
    load_audio,
    pcm16_to_float,
    probe_duration,
)

TONE_HZ = 1000.0
TONE_DBFS = -12.0


def _peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1.0 / SAMPLE_RATE)[np.argmax(spectrum)])


def test_constants_agree() -> None:
    assert SAMPLE_RATE == 16_000
    assert SAMPLES_PER_FRAME * 25 == SAMPLE_RATE


@pytest.mark.parametrize("rate", [16_000, 22_050, 44_100, 48_000])
@pytest.mark.parametrize("channels", [1, 2])
def test_wav_resamples_to_16k_mono_keeping_length_pitch_and_level(
    tmp_path: Path, rate: int, channels: int
) -> None:
    path = media.sine_wav(tmp_path / "t.wav", TONE_HZ, 1.5, rate, channels, TONE_DBFS)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(x.size - 1.5 * SAMPLE_RATE) <= 2
    assert _peak_hz(x) == pytest.approx(TONE_HZ, abs=20)
    # same level whether the tone was stored as mono or as identical stereo channels
    assert media.rms_dbfs(x[1000:-1000]) == pytest.approx(TONE_DBFS, abs=0.2)
    assert probe_duration(path) == pytest.approx(1.5, abs=1e-3)


@pytest.mark.parametrize(("codec", "suffix", "rate"), [
    ("libmp3lame", "mp3", 44_100), ("libopus", "ogg", 48_000), ("flac", "flac", 44_100),
    ("aac", "m4a", 44_100),
])
def test_compressed_formats_written_with_pyav_decode(
    tmp_path: Path, codec: str, suffix: str, rate: int
) -> None:
    seconds = 2.0
    path = media.encode_audio(tmp_path / f"t.{suffix}", media.sine(TONE_HZ, seconds, rate),
                              rate, codec, channels=2)
    x = load_audio(path)
    # encoders add priming/padding (mp3 ~1100, aac 1024 samples at the source rate)
    assert x.size / SAMPLE_RATE == pytest.approx(seconds, abs=0.08)
    assert _peak_hz(x[4000:-4000]) == pytest.approx(TONE_HZ, abs=20)
    assert media.rms_dbfs(x[4000:-4000]) == pytest.approx(-12.0, abs=1.0)
    duration = probe_duration(path)
    assert duration is not None and duration == pytest.approx(seconds, abs=0.1)


def test_audio_track_of_a_video_file(tmp_path: Path) -> None:
    from vivify.streamer.offline.video_writer import Mp4Writer

    path = tmp_path / "clip.mp4"
    tone = media.sine(TONE_HZ, 1.0, SAMPLE_RATE)
    with Mp4Writer(path, width=64, height=64, audio_rate=SAMPLE_RATE) as writer:
        for k in range(25):
            writer.write_frame(np.zeros((64, 64, 3), np.uint8))
            writer.write_audio(tone[k * SAMPLES_PER_FRAME : (k + 1) * SAMPLES_PER_FRAME])
    x = load_audio(path)
    assert x.size / SAMPLE_RATE == pytest.approx(1.0, abs=0.08)
    assert _peak_hz(x) == pytest.approx(TONE_HZ, abs=20)


@pytest.mark.parametrize("chunk", [1, 333, SAMPLES_PER_FRAME, 16_000, 10**7])
def test_chunks_have_the_requested_size_and_concatenate_to_the_same_audio(
    tmp_path: Path, chunk: int
) -> None:
    seconds = 0.2 if chunk == 1 else 2.3
    path = media.noise_wav(-20.0, seconds, tmp_path / "n.wav", rate=22_050)
    reference = load_audio(path)
    chunks = list(iter_audio(path, chunk_samples=chunk))
    assert all(c.size == chunk for c in chunks[:-1])
    assert 0 < chunks[-1].size <= chunk
    assert np.array_equal(np.concatenate(chunks), reference)


def test_bad_chunk_size_is_refused(tmp_path: Path) -> None:
    path = media.sine_wav(tmp_path / "t.wav")
    with pytest.raises(ValueError, match="chunk_samples"):
        next(iter_audio(path, chunk_samples=0))


def test_random_bytes_are_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "random.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes())
    with pytest.raises(AudioDecodeError, match="not an audio file"):
        load_audio(path)


def test_wav_truncated_inside_its_header(tmp_path: Path) -> None:
    full = media.sine_wav(tmp_path / "full.wav", seconds=1.0).read_bytes()
    path = tmp_path / "cut.wav"
    path.write_bytes(full[:30])
    with pytest.raises(AudioDecodeError):
        load_audio(path)
    with pytest.raises(AudioDecodeError):
        probe_duration(path)


def test_wav_truncated_mid_data_decodes_up_to_the_cut(tmp_path: Path) -> None:
    """PCM has no framing to tell a cut from an end: we decode what is there."""
    full = media.sine_wav(tmp_path / "full.wav", seconds=2.0).read_bytes()
    path = tmp_path / "cut.wav"
    path.write_bytes(full[: 44 + 32_000])  # 1 s of 16 kHz int16
    assert load_audio(path).size == pytest.approx(SAMPLE_RATE, abs=2)


def test_flac_with_garbage_frames_is_corrupt(tmp_path: Path) -> None:
    path = media.encode_audio(tmp_path / "t.flac", media.sine(TONE_HZ, 2.0, 44_100), 44_100,
                              "flac")
    data = bytearray(path.read_bytes())
    data[200:] = np.random.default_rng(1).integers(0, 256, len(data) - 200, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(AudioDecodeError, match="corrupt audio"):
        load_audio(path)


def test_damage_in_the_middle_is_skipped_not_fatal(tmp_path: Path) -> None:
    path = media.encode_audio(tmp_path / "t.mp3", media.sine(TONE_HZ, 3.0, 44_100), 44_100,
                              "libmp3lame")
    data = bytearray(path.read_bytes())
    n = len(data)
    data[n // 3 : n // 3 + 2000] = bytes(2000)
    path.write_bytes(bytes(data))
    assert load_audio(path).size / SAMPLE_RATE > 2.0


def test_an_image_has_no_audio_stream(tmp_path: Path) -> None:
    path = tmp_path / "portrait.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
    with pytest.raises(AudioDecodeError, match="no audio stream") as info:
        load_audio(path)
    assert isinstance(info.value, ValueError)
    assert "video" in str(info.value)


def test_missing_file_is_a_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "nope.wav")


def test_ten_minutes_iterate_in_bounded_memory(tmp_path: Path) -> None:
    seconds = 600
    path = media.noise_wav(-20.0, seconds, tmp_path / "long.wav")
    whole_file_bytes = seconds * SAMPLE_RATE * 4  # 38 MB as float32
    total = 0
    tracemalloc.start()
    try:
        for chunk in iter_audio(path, chunk_samples=16_000):
            total += chunk.size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == seconds * SAMPLE_RATE
    assert peak < whole_file_bytes / 20, f"peak {peak / 1e6:.1f} MB"


def test_pcm16_round_trip_and_clipping() -> None:
    every_value = np.arange(-32768, 32768, dtype="<i2").tobytes()
    x = pcm16_to_float(every_value)
    assert x.dtype == np.float32
    assert x.min() == -1.0 and x.max() < 1.0
    assert float_to_pcm16(x) == every_value
    clipped = np.frombuffer(float_to_pcm16(np.array([-2.0, 2.0, 0.5], np.float32)), "<i2")
    assert clipped.tolist() == [-32768, 32767, 16384]
    with pytest.raises(ValueError, match="even"):
        pcm16_to_float(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="mono"):
        float_to_pcm16(np.zeros((2, 4), np.float32))
