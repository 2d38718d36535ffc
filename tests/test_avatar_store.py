"""The avatar registry (streamer/server/avatars.py) with a stand-in preparer: records, consent
history, private files, persistence across restarts, shared renderers, deletion."""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest

from vivify.engines.avatar.default_avatar import DEFAULT_AVATAR_ID
from vivify.streamer.server import avatars as avatars_module
from vivify.streamer.server.avatars import (
    CONSENT_STATEMENT,
    DEFAULT_AVATAR_CONSENT,
    AvatarStore,
    ConsentRecord,
)
from vivify.streamer.server.errors import Conflict, NotFound


class FakePreparer:
    """Prepares anything into a small pack; counts its calls and the threads they ran on."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, int, Any]] = []
        self.gate = threading.Event()
        self.gate.set()

    def prepare(self, source: Path | bytes, size: int = 512, points: Any = None) -> Any:
        self.gate.wait(5)
        self.calls.append((source, size, points))
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        meta: dict[str, Any] = {"source_size": [640, 480], "warnings": ["found after denoising"],
                                "face_score": 0.9}
        if points is not None:
            meta["points"] = {"nose": [1.0, 2.0]}
        return SimpleNamespace(meta=meta, key=hashlib.sha256(data).hexdigest()[:8],
                               image_sha256=hashlib.sha256(data).hexdigest(),
                               crop=np.full((32, 32, 3), 128, np.uint8))


class FakeRenderer:
    built: ClassVar[list[Any]] = []

    def __init__(self, pack: Any) -> None:
        self.pack = pack
        FakeRenderer.built.append(pack)


@pytest.fixture(autouse=True)
def fake_renderer(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeRenderer.built = []
    monkeypatch.setattr(avatars_module, "Renderer", FakeRenderer)


def _store(root: Path, preparer: FakePreparer | None = None) -> AvatarStore:
    return AvatarStore(root, size=256, preparer=preparer or FakePreparer())  # type: ignore[arg-type]


def _consent(by: str = "Ada") -> ConsentRecord:
    return ConsentRecord.now(by=by, address="10.0.0.7")


def test_consent_record_states_what_was_agreed() -> None:
    c = _consent()
    assert c.statement == CONSENT_STATEMENT and c.by == "Ada" and c.address == "10.0.0.7"
    assert len(c.at) == 20 and c.at.endswith("Z") and c.at[10] == "T"


def test_create_makes_a_public_record_with_a_content_id(tmp_path: Path) -> None:
    preparer = FakePreparer()
    store = _store(tmp_path, preparer)
    record = asyncio.run(store.create(b"portrait-1", consent=_consent()))
    assert record.id == hashlib.sha256(b"portrait-1").hexdigest()[:16]
    assert preparer.calls == [(b"portrait-1", 256, None)]
    public = record.public()
    assert public["width"] == 640 and public["height"] == 480
    assert public["warnings"] == ["found after denoising"]
    assert public["meta"] == {"face_score": 0.9} and public["points"] is None
    assert public["consent"]["by"] == "Ada"
    assert [c["by"] for c in public["consent_history"]] == ["Ada"]
    assert store.get(record.id) is record and store.list() == [record]


def test_files_are_private(tmp_path: Path) -> None:
    store = _store(tmp_path)
    record = asyncio.run(store.create(b"portrait-1", consent=_consent()))
    assert stat.S_IMODE(store.uploads.stat().st_mode) == 0o700
    files = sorted(p.name for p in store.uploads.iterdir())
    assert files == sorted(f"{record.id}{ext}" for ext in (".img", ".json", ".consent.jsonl"))
    for p in store.uploads.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert (store.uploads / f"{record.id}.img").read_bytes() == b"portrait-1"
    stored = json.loads((store.uploads / f"{record.id}.json").read_text())
    assert "consent_history" not in stored  # the log file is the history


def test_placed_points_get_their_own_id(tmp_path: Path) -> None:
    store = _store(tmp_path)
    plain = asyncio.run(store.create(b"portrait-1", consent=_consent()))
    placed = asyncio.run(store.create(b"portrait-1", consent=_consent(), points='{"nose": []}'))
    assert placed.id != plain.id and placed.points == {"nose": [1.0, 2.0]}


def test_the_same_image_again_adds_a_consent_and_keeps_the_first(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first = asyncio.run(store.create(b"portrait-1", consent=_consent("Ada")))
    again = asyncio.run(store.create(b"portrait-1", consent=_consent("Grace")))
    assert again is first and first.consent is not None and first.consent["by"] == "Ada"
    assert [c["by"] for c in again.consent_history] == ["Ada", "Grace"]
    assert [c["by"] for c in store.consents(first.id)] == ["Ada", "Grace"]


def test_records_survive_a_restart_and_damaged_ones_are_skipped(tmp_path: Path) -> None:
    store = _store(tmp_path)
    record = asyncio.run(store.create(b"portrait-1", consent=_consent()))
    asyncio.run(store.create(b"portrait-1", consent=_consent("Grace")))
    (store.uploads / "broken.json").write_text("{not json")
    (store.uploads / "wrong.json").write_text('{"id": "wrong", "unexpected": 1}')
    with (store.uploads / f"{record.id}.consent.jsonl").open("a") as f:
        f.write("half a line\n")  # a torn append is skipped, the rest is kept
    reopened = _store(tmp_path)
    again = reopened.get(record.id)
    assert again.image_sha256 == record.image_sha256 and again.consent == record.consent
    assert [c["by"] for c in again.consent_history] == ["Ada", "Grace"]
    assert [r.id for r in reopened.list()] == [record.id]


def test_unknown_ids_are_404s(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(NotFound) as exc:
        store.get("nope")
    assert exc.value.code == "unknown_avatar" and exc.value.status == 404
    with pytest.raises(NotFound):
        store.delete("nope")
    with pytest.raises(NotFound):
        asyncio.run(store.renderer("nope"))
    assert store.consents("nope") == []


def test_the_default_avatar_exists_and_cannot_be_deleted(tmp_path: Path) -> None:
    store = _store(tmp_path)
    asyncio.run(store.ensure_default())
    asyncio.run(store.ensure_default())  # once is enough
    record = store.get(DEFAULT_AVATAR_ID)
    assert record.consent is not None
    assert record.consent["statement"] == DEFAULT_AVATAR_CONSENT.statement
    with pytest.raises(Conflict) as exc:
        store.delete(DEFAULT_AVATAR_ID)
    assert exc.value.code == "default_avatar" and exc.value.status == 409


def test_delete_removes_the_record_its_files_and_its_renderer(tmp_path: Path) -> None:
    store = _store(tmp_path)
    record = asyncio.run(store.create(b"portrait-1", consent=_consent()))
    asyncio.run(store.renderer(record.id))
    store.delete(record.id)
    assert list(store.uploads.iterdir()) == [] and store.list() == []
    with pytest.raises(NotFound):
        store.get(record.id)
    assert record.id not in store._renderers


def test_concurrent_first_uses_build_one_renderer(tmp_path: Path) -> None:
    preparer = FakePreparer()
    store = _store(tmp_path, preparer)
    record = asyncio.run(store.create(b"portrait-1", consent=_consent()))

    async def many() -> list[Any]:
        preparer.gate.clear()  # hold the first build until every caller waits on it
        tasks = [asyncio.create_task(store.renderer(record.id)) for _ in range(5)]
        await asyncio.sleep(0.05)
        preparer.gate.set()
        return await asyncio.gather(*tasks)

    renderers = asyncio.run(many())
    assert len(FakeRenderer.built) == 1 and all(r is renderers[0] for r in renderers)
    assert asyncio.run(store.renderer(record.id)) is renderers[0]  # kept for later sessions
    source = preparer.calls[-1][0]
    assert Path(source) == store.uploads / f"{record.id}.img"  # rebuilt from the stored image


def test_preview_is_a_jpeg_of_the_face_crop(tmp_path: Path) -> None:
    store = _store(tmp_path)
    record = asyncio.run(store.create(b"portrait-1", consent=_consent()))
    jpeg = asyncio.run(store.preview(record.id))
    assert jpeg[:3] == b"\xff\xd8\xff" and jpeg[-2:] == b"\xff\xd9"
