"""Local processes Vivify starts itself (cluster nodes, a local Janus) and the benchmarks' and
tests' servers: a free loopback port, and waiting until the process answers. One definition
each."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now on ``host`` (the kernel picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen[Any], probe: Callable[[], T | None], timeout: float,
               poll_s: float = 0.1) -> T | None:
    """``probe()``'s first non-None answer, polled every ``poll_s``; None as soon as ``proc``
    exits or after ``timeout`` seconds (the caller says why, with its log). ``probe`` raises
    nothing: a process that is still starting answers None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        answer = probe()
        if answer is not None:
            return answer
        time.sleep(poll_s)
    return None
