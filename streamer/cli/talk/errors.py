"""Exit codes of ``vivify talk`` and the one error type it reports to the user."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # the session failed or ended abnormally
EXIT_USAGE = 2  # bad arguments or input file (same code as the rest of the CLI)
EXIT_UNREACHABLE = 3  # no server answered at --server
EXIT_AUTH = 4  # the server refused the token
EXIT_INTERRUPTED = 130  # a second Ctrl-C aborted the cleanup


class TalkError(Exception):
    """A failure the user can act on: printed as one line, mapped to an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code

