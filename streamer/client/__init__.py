"""The one Python client of Vivify's public API (docs/api.md): ``vivify talk``, the remote
integrations, the benchmarks and the tests all talk to a server through it.

A call, end to end::

    from vivify.streamer.client import ApiClient, offer_peer

    async with ApiClient("http://127.0.0.1:8080", token) as api:
        pc = offer_peer("mirror", microphone)           # or "broadcast": receive-only
        pc.on("track", on_track)                        # before the answer is applied
        session = await api.create_session(pc, {"mode": "mirror", "avatar": "default"})
        async with api.websocket(session["id"]) as ws:  # PCM and JSON in, events out
            ...
        await api.delete_session(session["id"])

What it offers:

- :class:`ApiClient` ``(base_url, token=None, *, timeout=30.0, transport=None)``, async, on
  httpx; ``token`` is sent as ``Authorization: Bearer`` on every request and on the
  WebSocket; ``transport=httpx.ASGITransport(app)`` runs it against an app in-process.

  - ``create_session(pc, body, path="/v1/sessions")``: makes ``pc``'s offer, posts it in
    ``body``, applies the answer; the server's JSON (``id``, ``provenance``...). ``pc=None``
    posts ``body`` alone (a WebSocket-driven broadcast).
  - ``add_viewer(session_id, pc)``, ``session_stats(session_id)``, ``health()``,
    ``delete_session(session_id)`` (``False`` when it was already gone),
    ``upload_avatar(image, consent_by=..., points=...)``.
  - ``websocket(session_id)``: an async context manager yielding the ``websockets``
    connection; ``open_websocket(session_id)`` returns one to keep.
  - ``request(method, path, expect=...)`` for anything else; ``aclose()``.

- :func:`offer_peer` ``(mode, audio_track=None, *, ice_servers=())``: the peer connection a
  mode needs (mirror sends ``audio_track``; presenter, broadcast and viewer receive audio and
  video), made by :func:`vivify.streamer.rtc.peer.new_peer_connection`.
- :class:`ClientError` ``(status, code, message)``: a refusal, built from the API's error
  body ``{"error": {"code", "message"}}``; ``retry_after`` on ``503 server_full``.
  :class:`ServerUnreachable` (status 0) when nothing answered: "cannot reach the Vivify
  server at URL".

httpx is imported with this package; aiortc and websockets when a call needs them.
"""

from vivify.streamer.client.api import ApiClient, ClientError, ServerUnreachable
from vivify.streamer.client.peer import MODES, offer_peer

__all__ = ["MODES", "ApiClient", "ClientError", "ServerUnreachable", "offer_peer"]
