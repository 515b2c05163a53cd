"""SQL as the front end sees it: parse with sqlglot, find `:name` placeholders, tell reads from writes."""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

_TOKEN = re.compile(r"<Token token_type: [^,]*, text: (.*?), line: .*?>")
_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter,
           exp.TruncateTable, exp.Copy, exp.Command)


@dataclass
class SqlParseError(ValueError):
    message: str
    line: int
    col: int


def parse(text: str, dialect: str = "postgres") -> list[exp.Expression]:
    """Parse one or more statements; raises SqlParseError with a line/column inside the text."""
    try:
        statements = [s for s in sqlglot.parse(text, read=dialect) if s is not None]
    except ParseError as e:
        err = e.errors[0] if e.errors else {}
        message = _TOKEN.sub(lambda m: repr(m.group(1)), err.get("description") or str(e).splitlines()[0])
        raise SqlParseError(message, err.get("line") or 1, err.get("col") or 1) from None
    if not statements:
        raise SqlParseError("empty SQL statement", 1, 1)
    return statements


def placeholders(statements: list[exp.Expression]) -> list[str]:
    """Named parameters (`:name`) in order of first appearance."""
    seen: dict[str, None] = {}
    for s in statements:
        for p in s.find_all(exp.Placeholder):
            if p.name:
                seen.setdefault(p.name, None)
    return list(seen)


def is_write(statements: list[exp.Expression]) -> bool:
    """True when any statement (or CTE inside one) changes data or schema."""
    return any(isinstance(node, _WRITES) for s in statements for node in s.walk())


def output_columns(statements: list[exp.Expression]) -> list[str] | None:
    """Column names a read returns, or None when they can't be known statically (`*`, writes)."""
    last = statements[-1]
    if not isinstance(last, exp.Query) or is_write(statements):
        return None
    names = []
    for sel in last.selects:
        if isinstance(sel, exp.Star) or (isinstance(sel, exp.Column) and isinstance(sel.this, exp.Star)):
            return None
        name = sel.alias_or_name
        if not name:
            return None
        names.append(name)
    return names
