"""A full or broken stderr never fails a request: the diagnostic line is dropped and counted (II.2:
the store is the record). Before, a structlog call on a full disk raised and the request ended as a
bare 500 with no audit record (found by the storage fault tests)."""

from __future__ import annotations

import errno
import io

import structlog

from gateway.diagnostics import DiagnosticsLogger


class FullDisk(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_line_that_cannot_be_written_is_dropped_and_counted() -> None:
    before = DiagnosticsLogger.dropped
    logger = DiagnosticsLogger(FullDisk())
    for method in (logger.info, logger.error, logger.warning, logger.exception, logger.msg):
        method('{"event": "upstream_failed"}')
    assert DiagnosticsLogger.dropped == before + 5


def test_a_line_that_can_be_written_is_written() -> None:
    out = io.StringIO()
    bound = structlog.wrap_logger(DiagnosticsLogger(out), processors=[structlog.processors.JSONRenderer()])
    bound.info("ready", part="store")
    assert '"part": "store"' in out.getvalue()
