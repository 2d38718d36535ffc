"""``/v1/sessions``: create one (WebRTC mirror or broadcast), add viewers, speak, stats, end.

The WebSocket of a session is in :mod:`vivify.streamer.server.routes.websocket`.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from vivify.engines.audio.audio_io import SAMPLE_RATE
from vivify.engines.audio.espeak import VoiceFailed, VoiceUnavailable, synthesize
from vivify.streamer.server.errors import ApiError
from vivify.streamer.server.manager import SessionManager
from vivify.streamer.server.session import VideoOptions

MAX_SPEAK_CHARS = 2000
MAX_SDP_CHARS = 200_000


class SessionDescription(BaseModel):
    type: Literal["offer"]
    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)


class VideoSpec(BaseModel):
    # Accepted because clients send it (client_web, `vivify talk`); the frame rate is not a
    # choice: the motion contract runs at 25 fps, so anything else is a 422.
    fps: Literal[25] = 25  # = vivify.engines.audio.audio_io.FPS
    size: int = Field(512, ge=128, le=1024)
    codec: Literal["vp8", "h264"] = "vp8"


class SessionRequest(BaseModel):
    avatar: str = "default"
    offer: SessionDescription | None = None
    mode: Literal["mirror", "broadcast"] = "mirror"
    video: VideoSpec = Field(default_factory=VideoSpec)
    # Visible "AI-generated" label; honoured when the operator's policy is "client".
    label: bool | None = None


class ViewerRequest(BaseModel):
    offer: SessionDescription


class SpeakRequest(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_SPEAK_CHARS)
    voice: str = Field("en-us", pattern=r"^[a-z]{2,3}(-[a-z0-9]{2,8})*(\+[a-z0-9]+)?$")


def router(manager: SessionManager) -> APIRouter:
    api = APIRouter(prefix="/v1/sessions", tags=["sessions"])

    @api.post("", status_code=201)
    async def create_session(body: SessionRequest) -> dict[str, Any]:
        manager.avatars.get(body.avatar)
        if body.video.size != manager.config.size:
            raise ApiError(f"this server renders {manager.config.size}² video",
                           code="unsupported_size")
        session, answer = await manager.create(
            body.avatar, body.mode, VideoOptions(size=body.video.size, codec=body.video.codec),
            body.offer.model_dump() if body.offer else None, label=body.label)
        out: dict[str, Any] = {"id": session.id, "mode": session.mode, "avatar": session.avatar,
                               "provenance": session.provenance()}
        if answer is not None:
            out["answer"] = answer
        if session.sfu is not None:  # --sfu-url: where viewers subscribe (docs/scale-out.md)
            out["sfu"] = session.sfu.info()
        return out

    @api.post("/{session_id}/viewers", status_code=201)
    async def add_viewer(session_id: str, body: ViewerRequest) -> dict[str, Any]:
        session = manager.get(session_id)
        session.touch()
        viewer_id, answer = await session.add_viewer(body.offer.model_dump())
        return {"viewer": viewer_id, "answer": answer}

    @api.post("/{session_id}/speak", status_code=202)
    async def speak(session_id: str, body: SpeakRequest) -> dict[str, Any]:
        """Say ``text`` with the built-in demo voice (espeak-ng), as if an agent sent it."""
        session = manager.get(session_id)
        session.touch()
        try:
            audio = await synthesize(body.text, body.voice)
        except VoiceUnavailable as exc:
            raise ApiError(str(exc), code=exc.code, status=503) from exc
        except VoiceFailed as exc:
            raise ApiError(str(exc), code=exc.code, status=422) from exc
        try:
            session.media.push_audio(audio)
        except OverflowError as exc:
            raise ApiError(str(exc), code="buffer_full", status=409) from exc
        session.media.segment_end()
        return {"duration_ms": len(audio) * 1000 // SAMPLE_RATE}

    @api.get("/{session_id}")
    async def session_stats(session_id: str) -> dict[str, Any]:
        return manager.get(session_id).stats()

    @api.delete("/{session_id}", status_code=204)
    async def delete_session(session_id: str) -> Response:
        await manager.get(session_id).aclose("deleted by the API")
        return Response(status_code=204)

    return api
