"""The avatar registry: uploads become prepared packs and renderers, shared by sessions.

Preparation runs in a worker thread (face models are not thread-safe, so one at a time under a
lock). Renderers are built once per avatar and shared: rendering reads the pack, never writes.
Records persist as small JSON files next to the uploaded image, so ids survive a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vivify.engines.avatar.default_avatar import DEFAULT_AVATAR_ID, default_portrait_path
from vivify.engines.avatar.pack import AvatarPack, AvatarPreparer
from vivify.engines.render.renderer import Renderer
from vivify.streamer.server.errors import Conflict, lookup

log = logging.getLogger(__name__)

CONSENT_STATEMENT = ("I have the right to use this person's likeness: it is me, or I have their "
                     "permission, or the image is in the public domain or licensed for this use")


@dataclass(frozen=True)
class ConsentRecord:
    """The uploader's assertion, kept with the avatar for as long as the avatar exists."""

    statement: str
    by: str  # the name the uploader gave
    address: str  # the client address the upload came from
    at: str  # ISO 8601, UTC

    @classmethod
    def now(cls, by: str, address: str) -> ConsentRecord:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return cls(statement=CONSENT_STATEMENT, by=by, address=address, at=stamp)


DEFAULT_AVATAR_CONSENT = ConsentRecord(
    statement="public domain: NASA photograph of astronaut Eileen Collins, shipped with "
              "scikit-image as skimage.data.astronaut()",
    by="vivify (built-in default avatar)", address="local", at="1998-01-01T00:00:00Z")


@dataclass
class AvatarRecord:
    id: str
    created: float
    image_sha256: str
    width: int
    height: int
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    consent: dict[str, str] | None = None  # the first ConsentRecord; None only in old records
    consent_history: list[dict[str, str]] = field(default_factory=list)  # every one, oldest first
    points: dict[str, list[float]] | None = None  # the face placed by hand (engines/face_points)

    def public(self) -> dict[str, Any]:
        return asdict(self)


class AvatarStore:
    def __init__(self, root: Path, size: int = 512, preparer: AvatarPreparer | None = None) -> None:
        self.root = root
        self.size = size
        self.uploads = root / "uploads"
        # Portraits are personal data: the folder and every file in it are the owner's only.
        self.uploads.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.uploads.chmod(0o700)
        self.preparer = preparer or AvatarPreparer(cache_dir=root / "avatars")
        self._prepare_lock = threading.Lock()
        self._renderers: dict[str, Renderer] = {}
        self._loading: dict[str, asyncio.Future[Renderer]] = {}
        self._records: dict[str, AvatarRecord] = {}
        self._load_records()

    def _load_records(self) -> None:
        for meta in self.uploads.glob("*.json"):
            try:
                record = AvatarRecord(**json.loads(meta.read_text()))
                record.consent_history = self.consents(record.id)
                self._records[meta.stem] = record
            except (ValueError, TypeError) as exc:
                log.warning("skipping damaged avatar record %s: %s", meta, exc)

    def _image_path(self, avatar_id: str) -> Path:
        if avatar_id == DEFAULT_AVATAR_ID:
            return default_portrait_path()
        return self.uploads / f"{avatar_id}.img"

    def _prepare(self, source: Path | bytes, points: Any = None) -> AvatarPack:
        with self._prepare_lock:
            return self.preparer.prepare(source, size=self.size, points=points)

    async def ensure_default(self) -> None:
        if DEFAULT_AVATAR_ID not in self._records:
            pack = await asyncio.to_thread(self._prepare, default_portrait_path())
            self._records[DEFAULT_AVATAR_ID] = self._record(DEFAULT_AVATAR_ID, pack,
                                                            DEFAULT_AVATAR_CONSENT)

    def _record(self, avatar_id: str, pack: AvatarPack, consent: ConsentRecord) -> AvatarRecord:
        w, h = pack.meta.get("source_size", [0, 0])
        return AvatarRecord(id=avatar_id, created=time.time(), image_sha256=pack.image_sha256,
                            width=int(w), height=int(h), warnings=list(pack.meta.get(
                                "warnings", [])), meta={"face_score": pack.meta.get("face_score")},
                            consent=asdict(consent), points=pack.meta.get("points"))

    async def create(self, data: bytes, consent: ConsentRecord,
                     points: str | None = None) -> AvatarRecord:
        """Prepare an uploaded portrait (raises ``AvatarInputError`` on bad input).

        ``consent`` is required: no avatar exists without the uploader's assertion on record.
        """
        pack = await asyncio.to_thread(self._prepare, data, points)
        placed = f"|{pack.key}".encode() if points is not None else b""
        avatar_id = hashlib.sha256(data + placed).hexdigest()[:16]
        _append_private(self._consent_path(avatar_id), json.dumps(asdict(consent)) + "\n")
        earlier = self._records.get(avatar_id)
        if earlier is not None:  # the same image again: one more consent in its history
            earlier.consent_history = self.consents(avatar_id)
            return earlier
        record = self._record(avatar_id, pack, consent)
        record.consent_history = self.consents(avatar_id)
        _write_private(self._image_path(avatar_id), data)
        stored = {k: v for k, v in record.public().items() if k != "consent_history"}
        _write_private(self.uploads / f"{avatar_id}.json", json.dumps(stored).encode())
        self._records[avatar_id] = record
        return record

    def _consent_path(self, avatar_id: str) -> Path:
        return self.uploads / f"{avatar_id}.consent.jsonl"

    def consents(self, avatar_id: str) -> list[dict[str, str]]:
        """Every consent given for this avatar, oldest first (an append-only log: a re-upload
        of the same image adds to it, never replaces what was asserted before)."""
        path = self._consent_path(avatar_id)
        if not path.is_file():
            return []
        out = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def list(self) -> list[AvatarRecord]:
        return sorted(self._records.values(), key=lambda r: r.created)

    def get(self, avatar_id: str) -> AvatarRecord:
        return lookup(self._records, avatar_id, "avatar", "unknown_avatar")

    def delete(self, avatar_id: str) -> None:
        if avatar_id == DEFAULT_AVATAR_ID:
            raise Conflict("the default avatar cannot be deleted", code="default_avatar")
        self.get(avatar_id)
        self._records.pop(avatar_id, None)
        self._renderers.pop(avatar_id, None)
        for p in (self._image_path(avatar_id), self.uploads / f"{avatar_id}.json",
                  self._consent_path(avatar_id)):
            p.unlink(missing_ok=True)

    async def renderer(self, avatar_id: str) -> Renderer:
        """The avatar's shared renderer, built on first use. Concurrent first uses wait for
        one build instead of each preparing the pack again."""
        self.get(avatar_id)
        if avatar_id in self._renderers:
            return self._renderers[avatar_id]
        loading = self._loading.get(avatar_id)
        if loading is None:
            loading = asyncio.ensure_future(self._build_renderer(avatar_id))
            self._loading[avatar_id] = loading
            loading.add_done_callback(lambda f: self._loaded(avatar_id, f))
        return await asyncio.shield(loading)

    def _loaded(self, avatar_id: str, future: asyncio.Future[Renderer]) -> None:
        self._loading.pop(avatar_id, None)
        if not future.cancelled():
            future.exception()  # retrieved here: every waiter may have gone (a client left)

    async def _build_renderer(self, avatar_id: str) -> Renderer:
        pack = await asyncio.to_thread(self._prepare, self._image_path(avatar_id),
                                       self._records[avatar_id].points)
        renderer = await asyncio.to_thread(Renderer, pack)
        if avatar_id in self._records:  # not deleted meanwhile
            self._renderers[avatar_id] = renderer
        return renderer

    async def preview(self, avatar_id: str) -> bytes:
        """The avatar's aligned face crop as JPEG, for pickers and previews."""
        import cv2

        renderer = await self.renderer(avatar_id)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(renderer.pack.crop, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return bytes(buf)

    def clear_cache(self) -> None:
        shutil.rmtree(self.root / "avatars", ignore_errors=True)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` atomically, readable by the owner only (0600 from creation on)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _append_private(path: Path, text: str) -> None:
    """Append one line to an owner-only log (O_APPEND: earlier lines are never rewritten)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(text)
