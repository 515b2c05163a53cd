"""Exceptions raised by the tool layer."""

from __future__ import annotations


class ToolError(Exception):
    """A tool call failed; ``status`` and ``body`` are set for HTTP failures."""

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body


class SqlError(ToolError):
    """The database rejected or aborted a statement; the message is the database's own."""

    def __init__(self, message: str, *, sql: str | None = None):
        super().__init__(message)
        self.sql = sql


class SqlParseError(SqlError):
    """SQL text that does not parse; ``line``/``col`` (1-based) point into the text when known."""

    def __init__(self, message: str, line: int | None = None, col: int | None = None):
        super().__init__(message)
        self.line = line
        self.col = col

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return f"{self.message} (line {self.line}, col {self.col})"
