"""``/v1/avatars``: upload a portrait (with consent), list, get, preview, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response

from vivify.streamer.server.avatars import CONSENT_STATEMENT, ConsentRecord
from vivify.streamer.server.errors import ApiError, TooLarge
from vivify.streamer.server.manager import SessionManager

POINTS_HELP = ("place the face by hand when it is not found: JSON {right_eye, left_eye, nose, "
               "mouth_right, mouth_left}, each [x, y] in image pixels (the subject's right)")
CONSENT_YES = frozenset({"true", "yes", "1", "on"})


def router(manager: SessionManager, max_upload: int) -> APIRouter:
    api = APIRouter(prefix="/v1/avatars", tags=["avatars"])

    @api.post("", status_code=201)
    async def create_avatar(
        request: Request, image: Annotated[UploadFile, File()],
        consent: Annotated[str | None, Form(description=CONSENT_STATEMENT)] = None,
        consent_by: Annotated[str | None, Form(max_length=200)] = None,
        points: Annotated[str | None, Form(max_length=2000, description=POINTS_HELP)] = None,
    ) -> dict[str, Any]:
        """Upload a portrait. ``consent`` must be true: the uploader asserts the right to use
        the likeness; who (``consent_by``, the client address) and when are stored with it."""
        if (consent or "").strip().lower() not in CONSENT_YES:
            raise ApiError("uploading a portrait needs consent=true: confirm that you have the "
                           f"right to use this likeness ({CONSENT_STATEMENT})",
                           code="consent_required")
        record_consent = ConsentRecord.now(
            by=(consent_by or "").strip() or "unnamed uploader",
            address=request.client.host if request.client else "unknown")
        data = await image.read(max_upload + 1)
        if len(data) > max_upload:
            raise TooLarge(f"upload exceeds {max_upload // 2**20} MiB", code="image_too_large")
        record = await manager.avatars.create(data, consent=record_consent, points=points)
        return record.public()

    @api.get("")
    async def list_avatars() -> dict[str, Any]:
        return {"avatars": [r.public() for r in manager.avatars.list()]}

    @api.get("/{avatar_id}")
    async def get_avatar(avatar_id: str) -> dict[str, Any]:
        return manager.avatars.get(avatar_id).public()

    @api.get("/{avatar_id}/preview.jpg")
    async def avatar_preview(avatar_id: str) -> Response:
        """The prepared face crop (no token needed: it is what viewers see anyway)."""
        return Response(await manager.avatars.preview(avatar_id), media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=3600"})

    @api.delete("/{avatar_id}", status_code=204)
    async def delete_avatar(avatar_id: str) -> Response:
        manager.avatars.delete(avatar_id)
        manager.collect_garbage_soon()  # its renderer and pack: tens of MB, freed now
        return Response(status_code=204)

    return api
