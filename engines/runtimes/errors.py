"""Runtime errors: a missing library names what to install; a bad feed names the input."""

from __future__ import annotations


class MissingRuntimeError(RuntimeError):
    """A runtime's library (or its GPU) is not here. ``package`` says what to install."""

    def __init__(self, runtime: str, package: str, detail: str = "") -> None:
        self.runtime = runtime
        self.package = package
        msg = f"runtime {runtime!r} needs {package}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class InputMismatchError(ValueError):
    """A feed does not match the manifest (name, dtype or shape); the message names the input."""


class GraphUnavailableError(RuntimeError):
    """An exported model the server was told to use is not there (run ``vivify export``)."""
