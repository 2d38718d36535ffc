"""The server's audio receive buffer (vivify.streamer.rtc.peer.PassThroughAudioBuffer)."""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from vivify.streamer.rtc.peer import PassThroughAudioBuffer


def _packet(seq: int, payload: bytes) -> RtpPacket:
    packet = RtpPacket(payload_type=111, sequence_number=seq & 0xFFFF, timestamp=seq * 960)
    packet._data = payload  # type: ignore[attr-defined]  # what aiortc's depayloader sets
    return packet


def test_each_packet_goes_on_as_it_arrives() -> None:
    buffer = PassThroughAudioBuffer()
    for seq in range(5):
        pli, frame = buffer.add(_packet(seq, bytes([seq])))
        assert not pli and frame is not None  # no waiting for a newer packet
        assert frame.data == bytes([seq]) and frame.timestamp == seq * 960


def test_duplicates_and_late_packets_are_dropped_and_a_gap_passes() -> None:
    buffer = PassThroughAudioBuffer()
    got = [buffer.add(_packet(seq, b"x"))[1] is not None for seq in (10, 11, 11, 9, 14, 12, 15)]
    assert got == [True, True, False, False, True, False, True]  # 12, 13 lost: no stall


def test_sequence_numbers_wrap() -> None:
    buffer = PassThroughAudioBuffer()
    got = [buffer.add(_packet(seq, b"x"))[1] is not None for seq in (65534, 65535, 0, 1, 65535)]
    assert got == [True, True, True, True, False]
