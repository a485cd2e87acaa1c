"""The operational log (structlog JSON lines on stderr), which must never fail a request."""

from __future__ import annotations

import structlog


class DiagnosticsLogger(structlog.PrintLogger):
    """The operational log on stderr. A full or broken stderr must not fail a request — the store is
    the system of record (II.2) — so a line that cannot be written is dropped and counted."""

    dropped = 0

    def msg(self, message: str) -> None:
        try:
            super().msg(message)
        except (OSError, ValueError):  # ENOSPC, EIO, a closed stream
            DiagnosticsLogger.dropped += 1

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg
