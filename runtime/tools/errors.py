"""Exceptions raised by the tool layer (SQL errors are `halo.sql.SqlError`)."""

from __future__ import annotations


class ToolError(Exception):
    """A tool call failed; ``status`` and ``body`` are set for HTTP failures."""

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body
