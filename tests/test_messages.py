"""The WebSocket's message set (streamer/server/messages.py), case by case.

The property-based hostile-input cases are in tests/test_hardening.py; these are the plain
contract: what each message looks like, and the reason a bad one is refused with.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from vivify.engines.motion.vector import EMOTIONS
from vivify.streamer.server.messages import (
    MAX_DEPTH,
    MAX_TEXT_CHARS,
    SERVER_EVENTS,
    ControlsMessage,
    Interrupt,
    SegmentEnd,
    StatsRequest,
    nesting_depth,
    parse_client_message,
)


@pytest.mark.parametrize(("kind", "cls"), [("interrupt", Interrupt),
                                           ("segment_end", SegmentEnd), ("stats", StatsRequest)])
def test_the_bare_messages(kind: str, cls: type) -> None:
    msg = parse_client_message(json.dumps({"type": kind}))
    assert isinstance(msg, cls) and msg.type == kind


def test_controls_carry_any_subset_of_their_fields() -> None:
    empty = parse_client_message('{"type": "controls"}')
    assert isinstance(empty, ControlsMessage)
    assert (empty.emotion, empty.intensity, empty.gaze, empty.distance) == (None,) * 4
    full = parse_client_message(json.dumps({"type": "controls", "emotion": "happy",
                                            "intensity": 0.5, "gaze": [-1, 1],
                                            "distance": 0.25}))
    assert isinstance(full, ControlsMessage)
    assert full.emotion == "happy" and full.intensity == 0.5
    assert full.gaze == (-1.0, 1.0) and full.distance == 0.25


def test_every_engine_emotion_is_a_message_emotion() -> None:
    for emotion in EMOTIONS:
        msg = parse_client_message(json.dumps({"type": "controls", "emotion": emotion}))
        assert isinstance(msg, ControlsMessage) and msg.emotion == emotion


def test_messages_are_frozen() -> None:
    msg = parse_client_message('{"type": "controls", "intensity": 0.1}')
    with pytest.raises(ValidationError):
        msg.intensity = 0.9  # type: ignore[misc,union-attr]


@pytest.mark.parametrize(("text", "reason"), [
    ("not json", "invalid JSON"),
    ("[1, 2]", 'JSON objects with a "type"'),
    ('"stats"', 'JSON objects with a "type"'),
    ('{"kind": "stats"}', 'JSON objects with a "type"'),
    ('{"type": "dance"}', "unknown message type 'dance'; known: interrupt, segment_end, stats, "
                          "controls"),
    ('{"type": "stats", "more": 1}', "more: Extra inputs are not permitted"),
    ('{"type": "controls", "emotion": "bored"}', "emotion"),
    ('{"type": "controls", "intensity": 1.5}', "intensity"),
    ('{"type": "controls", "intensity": -0.1}', "intensity"),
    ('{"type": "controls", "intensity": "0.5"}', "intensity"),  # strict: no numeric strings
    ('{"type": "controls", "distance": false}', "distance"),  # strict: no booleans
    ('{"type": "controls", "gaze": [0.1]}', "gaze"),
    ('{"type": "controls", "gaze": [0.1, 0.2, 0.3]}', "gaze"),
    ('{"type": "controls", "gaze": [2, 0]}', "gaze.0"),
    ('{"type": "controls", "gaze": [0, -2]}', "gaze.1"),
    ('{"type": "controls", "distance": NaN}', "NaN is not a number JSON allows"),
    ('{"type": "controls", "distance": -Infinity}', "-Infinity is not a number JSON allows"),
])
def test_bad_messages_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_client_message(text)
    assert reason in str(exc.value)


def test_the_length_limit_is_checked_first() -> None:
    padded = '{"type": "stats"' + " " * (MAX_TEXT_CHARS - 17) + "}"
    assert len(padded) == MAX_TEXT_CHARS
    assert parse_client_message(padded).type == "stats"
    with pytest.raises(ValueError, match=f"at most {MAX_TEXT_CHARS} characters; got"):
        parse_client_message(padded + " ")


def test_the_depth_limit() -> None:
    at_limit = '{"type": "controls", "gaze": [0, 0], "x": ' + "[" * (MAX_DEPTH - 1) + \
        "]" * (MAX_DEPTH - 1) + "}"
    assert nesting_depth(at_limit) == MAX_DEPTH
    with pytest.raises(ValueError, match="x: Extra inputs"):  # past the depth check: schema
        parse_client_message(at_limit)


@pytest.mark.parametrize(("text", "depth"), [
    ("", 0), ("1", 0), ("{}", 1), ('{"a": [1, {"b": []}]}', 4),
    ('"[[[[[["', 0),  # brackets inside a string do not nest
    ('{"a": "\\"[[[["}', 1),  # nor after an escaped quote
    ('[["\\\\"], []]', 2),  # an escaped backslash ends before the quote
])
def test_nesting_depth_counts_brackets_outside_strings(text: str, depth: int) -> None:
    assert nesting_depth(text) == depth


def test_server_events_are_the_documented_ones() -> None:
    assert SERVER_EVENTS == ("playback_started", "playback_finished", "stats", "error",
                             "renderer_fallback")
