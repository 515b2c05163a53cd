"""Located diagnostics: every problem in a workflow file points at file:line:col."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Pos:
    """A position in a source file (1-based line and column)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One error or warning at a position."""

    pos: Pos
    message: str
    severity: str = "error"

    def render(self, source: str | None = None) -> str:
        """`file:line:col: severity: message`, then the source line with a caret under the spot."""
        head = f"{self.pos}: {self.severity}: {self.message}"
        if source is None:
            source = _read(self.pos.file)
        lines = source.splitlines() if source else []
        if 1 <= self.pos.line <= len(lines):
            text = lines[self.pos.line - 1].replace("\t", " ")
            return f"{head}\n    {text}\n    {' ' * (self.pos.col - 1)}^"
        return head


_SHOWN_BYTES = 1 << 20  # a diagnostic quotes its line from at most this much of the file


def _read(file: str) -> str | None:
    try:
        with Path(file).open("rb") as f:
            return f.read(_SHOWN_BYTES).decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return None


@dataclass
class HaloError(Exception):
    """Raised with one or more located diagnostics; the CLI prints them and exits with status 2."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(f"{d.pos}: {d.severity}: {d.message}" for d in self.diagnostics)

    @classmethod
    def at(cls, pos: Pos, message: str) -> HaloError:
        return cls([Diagnostic(pos, message)])
