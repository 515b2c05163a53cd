"""Prompt and URL templates: literal text with `{name}` / `{name.field}` holes; `{{` and `}}` are braces."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_HOLE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_REF = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*$")


@dataclass(frozen=True)
class Hole:
    """A placeholder; `offset` is its index in the template text (for error positions). `as_json` holes
    render their value as JSON: they stand inside a record spliced into the text (see plan.py)."""

    parts: tuple[str, ...]
    offset: int
    as_json: bool = False


@dataclass(frozen=True)
class Template:
    """A parsed template: a sequence of literal strings and holes."""

    pieces: tuple[str | Hole, ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        """Split text into pieces; raises TemplateError for a malformed hole or a lone brace."""
        pieces: list[str | Hole] = []
        literal: list[str] = []
        last = 0

        def plain(start: int, end: int) -> None:
            chunk = text[start:end]
            for i, c in enumerate(chunk):
                if c in "{}":
                    raise TemplateError("unbalanced brace (write {{ or }} for a literal brace)", start + i)
            literal.append(chunk)

        for m in _HOLE.finditer(text):
            plain(last, m.start())
            last = m.end()
            token = m.group(0)
            if token in ("{{", "}}"):
                literal.append(token[0])
                continue
            ref = _REF.match(m.group(1))
            if not ref:
                raise TemplateError(
                    f"malformed placeholder {token!r} (use {{name}} or {{name.field}}; "
                    "write {{ and }} for literal braces)",
                    m.start(),
                )
            if "".join(literal):
                pieces.append("".join(literal))
            literal = []
            pieces.append(Hole(tuple(ref.group(1).split(".")), m.start()))
        plain(last, len(text))
        tail = "".join(literal)
        if tail:
            pieces.append(tail)
        return cls(tuple(pieces))

    def holes(self) -> list[Hole]:
        return [p for p in self.pieces if isinstance(p, Hole)]

    def static_prefix(self) -> str:
        """The literal text before the first hole: shared by every instance."""
        out = []
        for p in self.pieces:
            if isinstance(p, Hole):
                break
            out.append(p)
        return "".join(out)

    def render(self, env: dict[str, Any]) -> str:
        """Fill holes from env (values looked up by dotted path and formatted for a prompt)."""
        return "".join(
            p
            if isinstance(p, str)
            else _json(lookup(env, p.parts))
            if p.as_json
            else format_value(lookup(env, p.parts))
            for p in self.pieces
        )


class TemplateError(ValueError):
    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


def lookup(env: dict[str, Any], parts: tuple[str, ...]) -> Any:
    """Resolve `a.b.c`: dict keys, and on a table (list of row dicts) the column of its first row."""
    value = env[parts[0]]
    for part in parts[1:]:
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def format_value(value: Any) -> str:
    """How a value reads inside a prompt: text as is, tables as compact pipe-separated rows, rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        cols = list(value[0].keys())
        lines = [" | ".join(cols)]
        lines += [" | ".join(_cell(r.get(c)) for c in cols) for r in value]
        return "\n".join(lines)
    return _json(value)


def _json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else str(v)
