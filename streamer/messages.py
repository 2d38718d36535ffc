"""The WebSocket's closed message set: client → server messages as pydantic models.

Server → client events are plain dicts with ``type`` in :data:`SERVER_EVENTS`.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from engines.motion import EMOTIONS

SERVER_EVENTS = ("playback_started", "playback_finished", "stats", "error", "renderer_fallback")
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


class ControlsMessage(_Msg):
    type: Literal["controls"]
    emotion: EmotionName | None = None
    intensity: float | None = Field(None, ge=0.0, le=1.0)
    gaze: tuple[float, float] | None = None
    distance: float | None = Field(None, ge=-1.0, le=1.0)


ClientMessage = Annotated[Interrupt | SegmentEnd | StatsRequest | ControlsMessage,
                          Field(discriminator="type")]
_ADAPTER: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


def parse_client_message(text: str) -> ClientMessage:
    """Parse one text message; raises ``ValueError`` with a readable reason."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg}") from exc
    if not isinstance(data, dict) or "type" not in data:
        raise ValueError('messages are JSON objects with a "type"')
    known = ("interrupt", "segment_end", "stats", "controls")
    if data["type"] not in known:
        raise ValueError(f"unknown message type {data['type']!r}; known: {', '.join(known)}")
    return _ADAPTER.validate_python(data)
