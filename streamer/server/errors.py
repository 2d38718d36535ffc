"""API errors: a stable ``code``, a human message, and the HTTP status they map to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ApiError(Exception):
    """An error the client caused: answered as ``{"error": {"code", "message"}}`` with
    ``status``; ``code`` and ``status`` may be narrowed per raise (e.g. ``unknown_session``)."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.headers = headers or {}


class NotFound(ApiError):
    """An id in the request names nothing here: an avatar or a session (see :func:`lookup`)."""

    status = 404
    code = "not_found"


class Conflict(ApiError):
    """The request clashes with what the server holds: deleting the default avatar, a second
    agent for an avatar or room that one already serves."""

    status = 409
    code = "conflict"


class Unauthorized(ApiError):
    """Missing or wrong bearer token. The ASGI guard (``guard.py``) answers these itself,
    before any route runs, with the same code; this is for a refusal from inside a route."""

    status = 401
    code = "unauthorized"


class TooLarge(ApiError):
    """An upload is over its limit (a portrait, a file to verify), or its pixels are."""

    status = 413
    code = "too_large"


class Full(ApiError):
    """No room for another session or viewer, or the server is shutting down: 503, so that a
    client tries again later or elsewhere."""

    status = 503
    code = "server_full"


def lookup(table: Mapping[K, V], key: K, what: str, code: str) -> V:
    """``table[key]``, or a 404 naming the ``what`` that is missing (``code`` for clients)."""
    try:
        return table[key]
    except KeyError:
        raise NotFound(f"no {what} {key!r}", code=code) from None
