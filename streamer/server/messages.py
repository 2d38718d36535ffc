"""The WebSocket's closed message set: client → server messages as pydantic models.

Server → client events are plain dicts with ``type`` in :data:`SERVER_EVENTS`.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from vivify.engines.motion.vector import EMOTIONS

SERVER_EVENTS = ("playback_started", "playback_finished", "stats", "error", "renderer_fallback")
MAX_TEXT_CHARS = 4096  # the largest valid message is ~150 characters
MAX_DEPTH = 4  # valid messages nest 2 deep (an object holding the gaze list)
EmotionName = Literal["neutral", "happy", "sad", "surprised", "angry"]
assert set(EMOTIONS) == {"neutral", "happy", "sad", "surprised", "angry"}


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Interrupt(_Msg):
    type: Literal["interrupt"]


class SegmentEnd(_Msg):
    type: Literal["segment_end"]


class StatsRequest(_Msg):
    type: Literal["stats"]


# Finite, in range, and a real number (not a bool, not a numeric string): NaN or an infinity
# here once reached OpenCV and crashed the process. The engine clamps again (Controls).
Unit = Annotated[float, Field(ge=-1.0, le=1.0, allow_inf_nan=False, strict=True)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, strict=True)]


class ControlsMessage(_Msg):
    type: Literal["controls"]
    emotion: EmotionName | None = None
    intensity: Fraction | None = None
    gaze: tuple[Unit, Unit] | None = None
    distance: Unit | None = None


ClientMessage = Annotated[Interrupt | SegmentEnd | StatsRequest | ControlsMessage,
                          Field(discriminator="type")]
_ADAPTER: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def nesting_depth(text: str) -> int:
    """The deepest ``[``/``{`` nesting of a JSON text, counted without parsing it (a parser
    recurses once per level: ten thousand ``[`` would raise RecursionError inside it)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_client_message(text: str) -> ClientMessage:
    """Parse one text message; raises ``ValueError`` with a readable reason.

    Bounded before anything is parsed: at most :data:`MAX_TEXT_CHARS` characters and
    :data:`MAX_DEPTH` levels of nesting. ``NaN`` and ``Infinity``, which Python's json reads
    but JSON does not have, are refused.
    """
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"text messages are at most {MAX_TEXT_CHARS} characters; "
                         f"got {len(text)}")
    if nesting_depth(text) > MAX_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg}") from exc
    except RecursionError as exc:  # belt and braces: nesting_depth should have caught it
        raise ValueError("JSON nested too deeply") from exc
    if not isinstance(data, dict) or "type" not in data:
        raise ValueError('messages are JSON objects with a "type"')
    known = ("interrupt", "segment_end", "stats", "controls")
    if data["type"] not in known:
        raise ValueError(f"unknown message type {str(data['type'])[:40]!r}; "
                         f"known: {', '.join(known)}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "message"
        raise ValueError(f"{where}: {first['msg']}") from None
