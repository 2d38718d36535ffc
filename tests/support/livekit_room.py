"""An in-process fake LiveKit room: enough of ``livekit.rtc.Room`` for both sides of the
LiveKit Agents avatar protocol (tests/test_livekit.py).

No LiveKit server can run here (none on PyPI, npm or Debian), so — as livekit/agents' own
tests do — the room is faked: :class:`FakeSFU` connects :class:`FakeRoom` objects in-process,
checks their JWTs with livekit-api (:data:`KEY`, :data:`SECRET`), routes RPCs and byte streams
between them and records every registration, call, stream and published track.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from livekit import api, rtc

KEY, SECRET = "devkey", "a-test-secret-of-at-least-32-bytes!!"
AGENT = "agent-AJ_test"


@dataclass
class RpcCall:
    t: float
    caller: str
    destination: str
    method: str
    payload: str
    result: str = ""


@dataclass
class StreamRecord:
    sender: str
    destinations: list[str]
    info: rtc.ByteStreamInfo
    chunks: list[bytes] = field(default_factory=list)
    closed: bool = False


class FakeSFU:
    """The rooms of one fake LiveKit server."""

    url = "ws://sfu.test"

    def __init__(self) -> None:
        self.rooms: dict[str, list[FakeRoom]] = {}
        self.rpc_log: list[RpcCall] = []
        self.registrations: list[tuple[str, str]] = []  # (identity, method)
        self.streams: list[StreamRecord] = []
        self.joined: list[str] = []

    def room(self) -> FakeRoom:
        return FakeRoom(self)

    def member(self, room: str, identity: str) -> FakeRoom | None:
        return next((r for r in self.rooms.get(room, []) if r.identity == identity), None)


class FakeRemoteParticipant:
    def __init__(self, identity: str, kind: int, attributes: dict[str, str]) -> None:
        self.identity = identity
        self.kind = kind
        self.attributes = dict(attributes)
        self.state = rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE
        self.track_publications: dict[str, FakePublication] = {}


@dataclass
class FakePublication:
    sid: str
    kind: int
    source: int
    track: Any = None
    subscribed: bool = False


class FakeByteStreamReader:
    def __init__(self, info: rtc.ByteStreamInfo) -> None:
        self._info = info
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    @property
    def info(self) -> rtc.ByteStreamInfo:
        return self._info

    def __aiter__(self) -> FakeByteStreamReader:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._queue.get()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        pass


class FakeByteStreamWriter:
    def __init__(self, record: StreamRecord, readers: list[FakeByteStreamReader]) -> None:
        self.record = record
        self._readers = readers

    @property
    def info(self) -> rtc.ByteStreamInfo:
        return self.record.info

    async def write(self, data: bytes) -> None:
        self.record.chunks.append(bytes(data))
        for reader in self._readers:
            reader._queue.put_nowait(bytes(data))

    async def aclose(self, **_: Any) -> None:
        self.record.closed = True
        for reader in self._readers:
            reader._queue.put_nowait(None)


class FakeLocalParticipant:
    _sids = itertools.count(1)

    def __init__(self, room: FakeRoom) -> None:
        self.room = room
        self.identity = ""
        self.kind = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
        self.attributes: dict[str, str] = {}
        self._rpc_handlers: dict[str, Callable[..., Any]] = {}
        self.track_publications: dict[str, FakePublication] = {}

    def register_rpc_method(self, method: str, handler: Callable[..., Any] | None = None) -> Any:
        if handler is None:
            return lambda fn: self.register_rpc_method(method, fn)
        self._rpc_handlers[method] = handler
        self.room.sfu.registrations.append((self.identity, method))
        return handler

    def unregister_rpc_method(self, method: str) -> None:
        self._rpc_handlers.pop(method, None)

    async def perform_rpc(self, *, destination_identity: str, method: str, payload: str,
                          response_timeout: float | None = None, **_: Any) -> str:
        call = RpcCall(time.perf_counter(), self.identity, destination_identity, method, payload)
        self.room.sfu.rpc_log.append(call)
        dest = self.room.sfu.member(self.room.name, destination_identity)
        if dest is None:
            raise rtc.RpcError(rtc.RpcError.ErrorCode.RECIPIENT_NOT_FOUND, "no such participant")
        handler = dest.local_participant._rpc_handlers.get(method)
        if handler is None:
            raise rtc.RpcError(rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD, "unsupported method")
        result = handler(rtc.RpcInvocationData(uuid.uuid4().hex, self.identity, payload,
                                               response_timeout or 10.0, method))
        if inspect.isawaitable(result):
            result = await result
        call.result = str(result)
        return call.result

    async def stream_bytes(self, name: str, *, total_size: int | None = None,
                           mime_type: str = "application/octet-stream",
                           attributes: dict[str, str] | None = None, stream_id: str | None = None,
                           destination_identities: list[str] | None = None,
                           topic: str = "") -> FakeByteStreamWriter:
        info = rtc.ByteStreamInfo(stream_id=stream_id or uuid.uuid4().hex, mime_type=mime_type,
                                  topic=topic, timestamp=int(time.time() * 1000),
                                  size=total_size, attributes=dict(attributes or {}), name=name)
        record = StreamRecord(self.identity, list(destination_identities or []), info)
        self.room.sfu.streams.append(record)
        readers = []
        for other in self.room.sfu.rooms.get(self.room.name, []):
            if other is self.room or (destination_identities
                                      and other.identity not in destination_identities):
                continue
            handler = other._byte_handlers.get(topic)
            if handler is not None:
                reader = FakeByteStreamReader(info)
                readers.append(reader)
                handler(reader, self.identity)
        return FakeByteStreamWriter(record, readers)

    async def publish_track(self, track: Any, options: Any = None) -> FakePublication:
        pub = FakePublication(f"TR_{next(self._sids)}", track.kind,
                              getattr(options, "source", 0), track)
        self.track_publications[pub.sid] = pub
        self.room.emit("local_track_published", pub, track)
        for other in self.room.sfu.rooms.get(self.room.name, []):
            if other is not self.room:
                other._remote_published(self.identity, pub)
        return pub

    async def unpublish_track(self, sid: str) -> None:
        self.track_publications.pop(sid, None)

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        self.attributes.update(attributes)


class FakeRoom(rtc.EventEmitter[str]):
    """Enough of ``rtc.Room`` for both sides of the avatar protocol."""

    def __init__(self, sfu: FakeSFU) -> None:
        super().__init__()
        self.sfu = sfu
        self.name = ""
        self.local_participant = FakeLocalParticipant(self)
        self.remote_participants: dict[str, FakeRemoteParticipant] = {}
        self._byte_handlers: dict[str, Callable[..., Any]] = {}
        self._connected = False

    @property
    def identity(self) -> str:
        return self.local_participant.identity

    def isconnected(self) -> bool:
        return self._connected

    async def connect(self, url: str, token: str, options: Any = None) -> None:
        if url != self.sfu.url:
            raise ConnectionError(f"cannot reach {url}")
        claims = api.TokenVerifier(KEY, SECRET).verify(token)  # as the server would
        assert claims.video is not None and claims.video.room_join
        lp = self.local_participant
        self.name, lp.identity = claims.video.room or "", claims.identity
        lp.kind = (rtc.ParticipantKind.PARTICIPANT_KIND_AGENT if claims.kind == "agent"
                   else rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD)
        lp.attributes = dict(claims.attributes or {})
        members = self.sfu.rooms.setdefault(self.name, [])
        self._connected = True
        for other in members:
            self._remote_joined(other.local_participant)
            other._remote_joined(lp)
        members.append(self)
        self.sfu.joined.append(lp.identity)
        self.emit("connection_state_changed", rtc.ConnectionState.CONN_CONNECTED)

    async def disconnect(self) -> None:
        if not self._connected:
            return
        self._connected = False
        members = self.sfu.rooms.get(self.name, [])
        if self in members:
            members.remove(self)
        for other in members:
            other._remote_left(self.identity)
        self.emit("connection_state_changed", rtc.ConnectionState.CONN_DISCONNECTED)
        self.emit("disconnected", "CLIENT_INITIATED")

    def register_byte_stream_handler(self, topic: str, handler: Callable[..., Any]) -> None:
        self._byte_handlers[topic] = handler

    def unregister_byte_stream_handler(self, topic: str) -> None:
        self._byte_handlers.pop(topic, None)

    def _remote_joined(self, lp: FakeLocalParticipant) -> None:
        rp = FakeRemoteParticipant(lp.identity, lp.kind, lp.attributes)
        rp.track_publications = {sid: FakePublication(p.sid, p.kind, p.source)
                                 for sid, p in lp.track_publications.items()}
        self.remote_participants[lp.identity] = rp
        self.emit("participant_connected", rp)
        self.emit("participant_active", rp)

    def _remote_left(self, identity: str) -> None:
        rp = self.remote_participants.pop(identity, None)
        if rp is not None:
            self.emit("participant_disconnected", rp)

    def _remote_published(self, identity: str, pub: FakePublication) -> None:
        rp = self.remote_participants.get(identity)
        if rp is not None:
            remote = FakePublication(pub.sid, pub.kind, pub.source)
            rp.track_publications[pub.sid] = remote
            self.emit("track_published", remote, rp)


def as_room(room: FakeRoom) -> rtc.Room:
    """The fake where the SDK's types want an ``rtc.Room``: it has every member the avatar
    protocol touches, not the rest."""
    return cast(rtc.Room, room)


def agent_token(room: str = "room-1", identity: str = AGENT) -> str:
    return (api.AccessToken(KEY, SECRET).with_identity(identity).with_kind("agent")
            .with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt())
