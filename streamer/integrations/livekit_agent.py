"""The agent side of a Vivify avatar in LiveKit Agents, in the style of the official plugins.

Usage, in an agent's entrypoint (see examples/livekit_avatar.py)::

    avatar = VivifyAvatarSession(server_url="http://vivify:8080", server_token="…")
    await avatar.start(session, room=ctx.room)
    await session.start(agent=..., room=ctx.room)

:meth:`VivifyAvatarSession.start` does what every avatar plugin does (Tavus, Simli, Anam,
Hedra, bitHuman): it mints an access token for the avatar participant with the attribute
``lk.publish_on_behalf`` = the agent's identity (so the room shows the avatar's tracks as the
agent's), reroutes the agent's audio output to a ``DataStreamAudioOutput`` aimed at that
participant, and starts the avatar:

- **remote** (``server_url`` or ``VIVIFY_URL``): a running ``vivify serve`` joins the room
  (``POST /v1/livekit/sessions``); its engines batch this avatar with all its other sessions;
- **in-process** (otherwise): a worker task in this process joins the room as the avatar, on
  :class:`~vivify.streamer.integrations.avatar_session.LocalAvatars` (given, or started here).

Either way the avatar side is streamer/integrations/livekit_worker.py; nothing of the agent's
audio path differs. Requires the LiveKit extra: ``pip install '.[livekit]'``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from typing import Any

import aiohttp
from livekit import api, rtc
from livekit.agents import AgentSession, get_job_context
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.agents.voice.avatar import AvatarSession as BaseAvatarSession
from livekit.agents.voice.avatar import DataStreamAudioOutput

from vivify.streamer.integrations.avatar_session import LocalAvatars
from vivify.streamer.integrations.livekit_worker import LiveKitAvatarWorker, RoomFactory, join_room

log = logging.getLogger(__name__)

AVATAR_IDENTITY = "vivify-avatar"
AVATAR_NAME = "Vivify avatar"
SAMPLE_RATE = 16000  # what the engines take: the agent resamples its TTS once, to this
TOKEN_TTL = datetime.timedelta(hours=6)
HTTP_TIMEOUT_S = 30.0  # the server answers once it has joined the room


class VivifyAvatarError(RuntimeError):
    """The avatar could not be started (missing credentials, the server refused)."""


def mint_avatar_token(*, api_key: str, api_secret: str, room: str, avatar_identity: str,
                      agent_identity: str, name: str = AVATAR_NAME,
                      ttl: datetime.timedelta = TOKEN_TTL) -> str:
    """The avatar participant's token: joins ``room`` as an agent-kind participant that may
    publish and send data (RPC, streams), on behalf of ``agent_identity``."""
    return (api.AccessToken(api_key=api_key, api_secret=api_secret)
            .with_kind("agent")
            .with_identity(avatar_identity)
            .with_name(name)
            .with_ttl(ttl)
            .with_grants(api.VideoGrants(room_join=True, room=room, can_publish=True,
                                         can_publish_data=True, can_subscribe=True))
            .with_attributes({ATTRIBUTE_PUBLISH_ON_BEHALF: agent_identity})
            .to_jwt())


class VivifyAvatarSession(BaseAvatarSession):
    """A Vivify avatar for a LiveKit agent (see the module docstring)."""

    def __init__(self, *, avatar: str = "default", server_url: str | None = None,
                 server_token: str | None = None, avatars: LocalAvatars | None = None,
                 avatar_identity: str = AVATAR_IDENTITY, avatar_name: str = AVATAR_NAME,
                 room_factory: RoomFactory | None = None) -> None:
        super().__init__()
        self._avatar = avatar
        self._server_url = (server_url or os.getenv("VIVIFY_URL") or "").rstrip("/") or None
        self._server_token = server_token or os.getenv("VIVIFY_TOKEN") or None
        self._avatars = avatars
        self._owns_avatars = False
        self._identity = avatar_identity
        self._name = avatar_name
        self._room_factory = room_factory  # in-process mode: rtc.Room unless replaced (tests)
        self.token: str | None = None  # the avatar participant's token, once started
        self.session_id: str | None = None  # the avatar session (on the server, or here)
        self.worker: LiveKitAvatarWorker | None = None  # in-process mode

    @property
    def avatar_identity(self) -> str:
        return self._identity

    @property
    def provider(self) -> str:
        return "vivify"

    @property
    def remote(self) -> bool:
        return self._server_url is not None

    async def start(self, agent_session: AgentSession, room: rtc.Room, *,
                    livekit_url: str | None = None, livekit_api_key: str | None = None,
                    livekit_api_secret: str | None = None) -> None:
        """Mint the avatar's token, start the avatar, route the agent's audio to it."""
        await super().start(agent_session, room)
        job = get_job_context(required=False)
        url = livekit_url or os.getenv("LIVEKIT_URL") or _job_url(job)
        key = livekit_api_key or os.getenv("LIVEKIT_API_KEY")
        secret = livekit_api_secret or os.getenv("LIVEKIT_API_SECRET")
        if not url or not key or not secret:
            raise VivifyAvatarError("the LiveKit URL, API key and secret must be given as "
                                    "arguments or as LIVEKIT_URL / LIVEKIT_API_KEY / "
                                    "LIVEKIT_API_SECRET")
        agent_identity = (job.local_participant_identity if job is not None
                          else room.local_participant.identity)
        self.token = mint_avatar_token(api_key=key, api_secret=secret, room=room.name,
                                       avatar_identity=self._identity,
                                       agent_identity=agent_identity, name=self._name)
        if self.remote:
            self.session_id = await self._start_remote(url, self.token)
        else:
            self.session_id = await self._start_local(url, self.token)
        log.info("vivify avatar %s started (%s, session %s)", self._identity,
                 "remote" if self.remote else "in-process", self.session_id)
        agent_session.output.replace_audio_tail(DataStreamAudioOutput(
            room, destination_identity=self._identity, sample_rate=SAMPLE_RATE,
            # the first words wait until the face is in the room; the avatar reports
            # lk.playback_started when the first frame with speech is published
            wait_remote_track=rtc.TrackKind.KIND_VIDEO, wait_playback_start=True))

    async def _start_local(self, url: str, token: str) -> str:
        if self._avatars is None:
            self._avatars = await LocalAvatars.start()
            self._owns_avatars = True
        self.worker = await join_room(url, token, self._avatars, self._avatar,
                                      room_factory=self._room_factory)
        return self.worker.session.id

    async def _start_remote(self, url: str, token: str) -> str:
        body = {"url": url, "token": token, "avatar": self._avatar}
        data = await self._request("POST", "/v1/livekit/sessions", body)
        return str(data["id"])

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None
                       ) -> dict[str, Any]:
        assert self._server_url is not None
        headers = {"Authorization": f"Bearer {self._server_token}"} if self._server_token else {}
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.request(
                method, self._server_url + path, json=body, headers=headers) as response:
            text = await response.text()
            if response.status >= 400:
                raise VivifyAvatarError(f"vivify serve answered {method} {path} with "
                                        f"{response.status}: {text[:300]}")
            return dict(json.loads(text)) if text else {}

    async def aclose(self) -> None:
        """End the avatar: its session (on the server, or here) and its room participant."""
        await super().aclose()
        if self.worker is not None:
            await self.worker.aclose("the agent closed the avatar")
            self.worker = None
        elif self.remote and self.session_id is not None:
            try:
                await self._request("DELETE", f"/v1/sessions/{self.session_id}")
            except (VivifyAvatarError, aiohttp.ClientError, TimeoutError) as exc:
                log.debug("vivify avatar session %s: %s", self.session_id, exc)  # gone already
        self.session_id = None
        if self._owns_avatars and self._avatars is not None:
            await self._avatars.aclose()
            self._avatars, self._owns_avatars = None, False


def _job_url(job: Any) -> str | None:
    """The LiveKit URL the job itself was given (the official example reads it the same way;
    there is no public accessor)."""
    info = getattr(job, "_info", None)
    return getattr(info, "url", None) or None
