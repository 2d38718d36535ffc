"""Loopback ports for servers a test starts: one definition, vivify.streamer.net."""

from __future__ import annotations

from vivify.streamer.net import free_port

__all__ = ["free_port"]
