"""Static types of values flowing through a workflow, and the operator signatures the checker enforces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from halo import ast


@dataclass(frozen=True)
class Type:
    """A value type. `fields` is known for structs and for tables whose columns are known."""

    kind: str                                   # text int float bool json table struct model db list
    fields: tuple[tuple[str, Type], ...] | None = None
    elem: Type | None = None

    def field(self, name: str) -> Type | None:
        return dict(self.fields or ()).get(name)

    def __str__(self) -> str:
        if self.kind == "list" and self.elem:
            return f"{self.elem}[]"
        return self.kind


TEXT, INT, FLOAT, BOOL, JSON = Type("text"), Type("int"), Type("float"), Type("bool"), Type("json")
MODEL, DB = Type("model"), Type("db")
SCALARS = {"text": TEXT, "int": INT, "float": FLOAT, "bool": BOOL, "json": JSON}
VALUE_KINDS = {"text", "int", "float", "bool", "json", "table", "struct", "list"}


def from_ref(t: ast.TypeRef) -> Type | None:
    base = SCALARS.get(t.name)
    if base is None:
        return None
    return Type("list", elem=base) if t.is_list else base


def struct(fields: list[tuple[str, Type]]) -> Type:
    return Type("struct", tuple(fields))


def write_result(columns: tuple[tuple[str, Type], ...] | None) -> Type:
    """The value of an SQL write: {rowcount: int, rows: the table of its RETURNING rows} (columns None: unknown)."""
    return struct([("rowcount", INT), ("rows", Type("table", columns))])


def assignable(value: Type, target: Type) -> bool:
    """Whether a value of type `value` may flow where `target` is expected."""
    if target.kind == "json" or value.kind == "json":
        return True
    if target.kind == value.kind:
        return target.kind != "list" or assignable(value.elem or JSON, target.elem or JSON)
    return target.kind == "float" and value.kind == "int"


_JSON_TYPES = {"text": "string", "int": "integer", "float": "number", "bool": "boolean"}


def json_schema(t: Type) -> dict[str, Any] | None:
    """A JSON schema for a struct output type (None for plain text)."""
    if t.kind != "struct" or not t.fields:
        return None
    props = {name: ({"type": _JSON_TYPES[ft.kind]} if ft.kind in _JSON_TYPES else {}) for name, ft in t.fields}
    return {"type": "object", "properties": props, "required": [n for n, _ in t.fields]}


@dataclass(frozen=True)
class OpSig:
    """What an operator accepts: positional slots, typed keywords, and whether extra keywords are allowed."""

    positional: tuple[str, ...]
    required: tuple[str, ...]
    keywords: dict[str, str] = field(default_factory=dict)   # name -> expected kind
    extra_keywords: bool = False                              # sql params, py args


OPS: dict[str, OpSig] = {
    "llm": OpSig(("model", "prompt"), ("model", "prompt"),
                 {"model": "model", "prompt": "template", "system": "template", "max_tokens": "int",
                  "temperature": "float", "top_p": "float", "seed": "int"}),
    "sql": OpSig(("db", "query"), ("db", "query"), {"db": "db", "query": "sql", "timeout": "float"},
                 extra_keywords=True),
    "http": OpSig(("method", "url"), ("url",),
                  {"method": "method", "url": "template", "query": "any", "body": "any", "headers": "any",
                   "timeout": "float", "retries": "int", "follow_redirects": "redirects"}),
    "py": OpSig(("function",), ("function",), {"function": "function", "pure": "bool", "timeout": "float"},
                extra_keywords=True),
}
# Seconds a tool call may run when its `timeout` argument is not given; past it, that input's call fails.
DEFAULT_TIMEOUT_S = {"sql": 60.0, "http": 30.0, "py": 60.0}
REDIRECT_POLICIES = ("same-origin", "any", "none")      # http(follow_redirects = ...); the first is the default
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
