"""The server's sessions: admission control, the engines they share, cleanup after them.

The :class:`SessionManager` makes each :class:`~vivify.streamer.server.session.Session` (its
media, its place in the shared engines) and hears back from it through the two callbacks it
gives it: when the session starts closing (no longer listed, its place is free) and when it has
closed (its memory is collected soon).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from vivify.engines.motion.baseline import BaselineConfig, BaselineDriver
from vivify.engines.motion.driver import MotionDriver
from vivify.engines.provenance.disclosure import DisclosureConfig
from vivify.engines.provenance.stamp import ProvenanceStamp
from vivify.engines.render.graph_renderer import GraphRenderer
from vivify.streamer.media.batcher import WindowBatcher
from vivify.streamer.media.clock import Clock
from vivify.streamer.media.render_paths import GraphSlot, SharedEngines
from vivify.streamer.media.scheduler import InferenceScheduler
from vivify.streamer.media.session_media import MediaConfig, SessionMedia
from vivify.streamer.server.avatars import AvatarStore
from vivify.streamer.server.config import ServerConfig
from vivify.streamer.server.errors import ApiError, Full, lookup
from vivify.streamer.server.memory import release_free_heap
from vivify.streamer.server.session import (
    RETRY_AFTER_S,
    Mode,
    PeerSettings,
    Session,
    VideoOptions,
)
from vivify.streamer.sfu.publisher import sfu_config, try_publish

log = logging.getLogger(__name__)

GC_DELAY_S = 1.0  # full garbage collection this long after a session closes (coalesced)


class SessionManager:
    """All live sessions, the capacity they share, and their common engine pieces."""

    def __init__(self, config: ServerConfig, avatars: AvatarStore, scheduler: InferenceScheduler,
                 clock: Clock, capacity: int,
                 driver_factory: Callable[[], MotionDriver] | None = None,
                 batcher: WindowBatcher | None = None,
                 render_batcher: WindowBatcher | None = None) -> None:
        self.config = config
        self.avatars = avatars
        self.scheduler = scheduler
        self.clock = clock
        self.capacity = capacity
        self.sessions: dict[str, Session] = {}
        self.driver_factory = driver_factory or (lambda: BaselineDriver(BaselineConfig()))
        self.batcher = batcher  # shared by every session whose driver can be batched
        # With ``--renderer graph``: the renderer graph's batcher (its runner a GraphRenderer);
        # a session whose avatar the graph cannot take renders on the CPU renderer instead.
        self.render_batcher = render_batcher
        self.peers = PeerSettings(ice_servers=config.ice_servers,
                                  audio_prefetch_frames=config.audio_prefetch_frames,
                                  max_viewers=config.max_viewers_per_session)
        self.sfu = sfu_config(config)  # --sfu-url: broadcasts publish into Janus
        self.graph_fallbacks = 0
        self.created_total = 0
        self.shutting_down = False
        self._reserved = 0  # admissions granted to creates still in progress
        self._gc_pending = False

    def wants_label(self, requested: bool | None) -> bool:
        """The operator's label policy decides; under ``client`` the request does (default on)."""
        policy = self.config.disclosure_label
        if policy == "client":
            return True if requested is None else requested
        return policy == "always"

    @contextlib.contextmanager
    def _admission(self) -> Iterator[None]:
        """One place in the capacity, taken before any await and released on every path.

        The check and the reservation happen with no await between them, so concurrent
        creates cannot all pass the check while an avatar's renderer loads (measured before:
        30 concurrent creates on a cold avatar, all 30 admitted with a cap of 4). A session
        that got its place is in ``sessions`` before the reservation is returned.
        """
        if self.shutting_down:
            raise Full("the server is shutting down", code="shutting_down")
        if len(self.sessions) + self._reserved >= self.capacity:
            raise Full(f"the server is running its maximum of {self.capacity} sessions",
                       headers={"Retry-After": str(RETRY_AFTER_S)})
        self._reserved += 1
        try:
            yield
        finally:
            self._reserved -= 1

    async def create(self, avatar: str, mode: Mode, video: VideoOptions,
                     offer: dict[str, str] | None, label: bool | None = None,
                     ) -> tuple[Session, dict[str, str] | None]:
        if mode == "mirror" and offer is None:
            raise ApiError("mirror mode needs an SDP offer", code="offer_required")
        with self._admission():
            return await self._create(avatar, mode, video, offer, label)

    async def _create(self, avatar: str, mode: Mode, video: VideoOptions,
                      offer: dict[str, str] | None, label: bool | None,
                      ) -> tuple[Session, dict[str, str] | None]:
        renderer = await self.avatars.renderer(avatar)
        session_id = uuid.uuid4().hex
        stamp = ProvenanceStamp(session_id, DisclosureConfig(text=self.config.label_text)
                                if self.wants_label(label) else None)
        config = MediaConfig(depth=self.config.playout_depth_frames, live=(mode == "mirror"),
                             max_buffer_seconds=self.config.max_ws_buffer_seconds)
        shared = SharedEngines(self.batcher, await self._attach_render(avatar, renderer.pack))
        media = SessionMedia(renderer, self.driver_factory(), self.scheduler, self.clock, config,
                             stamp=stamp, shared=shared)
        session = Session(avatar, mode, video, media, self.clock, self.peers, session_id,
                          on_closing=self._forget, on_closed=self._closed)
        self.sessions[session.id] = session
        self.created_total += 1
        media.start()
        if self.config.session_idle_timeout > 0:
            session.watch_idle(self.config.session_idle_timeout)
        if mode == "broadcast" and self.sfu is not None:
            session.sfu = await try_publish(self.sfu, session, video.codec)
        try:
            answer = await session.connect(offer) if offer is not None else None
        except BaseException:
            await session.aclose("negotiation failed")
            raise
        return session, answer

    @property
    def graph(self) -> GraphRenderer | None:
        runner = self.render_batcher.runner if self.render_batcher else None
        return runner if isinstance(runner, GraphRenderer) else None

    async def _attach_render(self, avatar: str, pack: Any) -> GraphSlot | None:
        """A new session's place in the renderer graph, or None (it renders on the CPU)."""
        graph, batcher = self.graph, self.render_batcher
        if graph is None or batcher is None:
            return None
        try:
            await self.scheduler.run(lambda: graph.attach(avatar, pack))
        except ValueError as exc:
            self.graph_fallbacks += 1
            log.warning("avatar %s renders on the CPU renderer: %s", avatar, exc)
            return None
        return GraphSlot(batcher, avatar, release=lambda: graph.detach(avatar))

    def get(self, session_id: str) -> Session:
        return lookup(self.sessions, session_id, "session", "unknown_session")

    def _forget(self, session: Session) -> None:
        """A session started closing: it is no longer listed and its place is free."""
        self.sessions.pop(session.id, None)

    def _closed(self, _session: Session) -> None:
        self.collect_garbage_soon()

    def collect_garbage_soon(self) -> None:
        """Free a closed session's memory now rather than at some distant full collection.

        A session is a web of reference cycles (peer connections, their transports and codecs,
        event-handler closures), so reference counting cannot free it; CPython's oldest
        generation is collected rarely in a long-lived process, and until then each closed
        session keeps its frames and codec buffers (measured: +4 MB per session, RSS growing
        ~11 MB/min in a soak). One full collection a second after closes, coalesced, frees
        them; it costs ~5 ms because the server froze its start-up objects (``gc.freeze``).
        Then the allocator hands the freed pages back to the OS (``malloc_trim``).
        """
        if self._gc_pending:
            return
        self._gc_pending = True

        def collect() -> None:
            self._gc_pending = False
            gc.collect()
            release_free_heap()

        asyncio.get_running_loop().call_later(GC_DELAY_S, collect)

    async def close_all(self, reason: str = "server shutting down") -> None:
        await asyncio.gather(*(s.aclose(reason) for s in list(self.sessions.values())),
                             return_exceptions=True)

    async def shutdown(self) -> None:
        """Refuse new sessions and close every live one (each WebSocket gets its
        ``session_closed`` event, then close code 1012). Safe to call twice."""
        self.shutting_down = True
        await self.close_all("server shutting down")
