"""``POST /v1/verify`` (tag ``provenance``): is this video or image marked by Vivify?"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, File, UploadFile

from vivify.streamer.server.errors import ApiError, TooLarge
from vivify.streamer.server.memory import release_free_heap

MAX_VERIFY_BYTES = 200 * 2**20  # a few seconds of even a 4K clip; verify reads ≤ 6 s of it


def router() -> APIRouter:
    api = APIRouter(tags=["provenance"])
    verify_slot = asyncio.Semaphore(1)  # ~1–2 s of CPU each: one at a time, sessions first

    @api.post("/v1/verify")
    async def verify(file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        """Is this video or image marked by Vivify? Same answer as ``vivify verify --json``."""
        from vivify.streamer.offline.verify import VerifyInputError, VerifyTooLarge, verify_file

        if file.size is not None and file.size > MAX_VERIFY_BYTES:
            raise TooLarge(f"upload exceeds {MAX_VERIFY_BYTES // 2**20} MiB",
                           code="file_too_large")
        async with verify_slot:
            try:
                result = await asyncio.to_thread(verify_file, file.file)
            except VerifyTooLarge as exc:
                raise TooLarge(str(exc), code=exc.code) from exc
            except VerifyInputError as exc:
                raise ApiError(str(exc), code=exc.code, status=422) from exc
            finally:
                release_free_heap()  # decoded frames are freed: give the pages back
        out: dict[str, Any] = json.loads(result.to_json())
        out["file"] = file.filename or "upload"
        return out

    return api
