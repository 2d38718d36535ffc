"""Loopback ports for servers a test starts: the benchmarks' own helper, one definition."""

from __future__ import annotations

from bench.harness.server import free_port

__all__ = ["free_port"]
