"""Static types of values flowing through a workflow, and the operator-kind registry (`OPS`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from halo import ast


@dataclass(frozen=True)
class Type:
    """A value type. `fields` is known for structs and for tables whose columns are known."""

    kind: str  # text int float bool json table struct model db list
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
    props = {
        name: ({"type": _JSON_TYPES[ft.kind]} if ft.kind in _JSON_TYPES else {}) for name, ft in t.fields
    }
    return {"type": "object", "properties": props, "required": [n for n, _ in t.fields]}


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")  # HTTP methods that change nothing: no side effect, calls may merge
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
REDIRECT_POLICIES = ("same-origin", "any", "none")  # http(follow_redirects = ...); the first is the default


@dataclass(frozen=True)
class OpSig:
    """One operator kind: what it accepts (positional slots, typed keywords, extra keywords), the value of
    every optional argument left out, how it is labelled, where it runs, what makes one of its calls a side
    effect, and the per-call numbers the cost model assumes for a tool when nothing is measured."""

    positional: tuple[str, ...]
    required: tuple[str, ...]
    keywords: dict[str, str] = field(default_factory=dict)  # name -> expected kind
    extra_keywords: bool = False  # sql params, py args
    defaults: dict[str, Any] = field(default_factory=dict)  # optional argument -> value when not given
    label: str = ""  # "LLM", "SQL", ... in plans and rewrites
    identity: str = ""  # what makes two calls one (call_key), as text
    tool: bool = True  # runs on the tool pool (else an LLM engine)
    effect: str = "none"  # side effect: "none", "write" (SQL writes), "method" (unsafe), "impure"
    latency_s: float = 0.0  # tool: seconds per call when nothing is measured
    concurrency: int = 1  # tool: calls of one group in flight at once
    upstream_tokens: int = 0  # tool: prompt tokens its output adds when pasted into a prompt

    def option(self, args: Mapping[str, ast.Expr], name: str) -> Any:
        """The constant value of argument `name`; the default when it is not given or not a constant."""
        expr = args.get(name)
        if expr is not None:
            try:
                return ast.literal_value(expr)
            except ValueError:
                pass
        return self.defaults.get(name)

    def side_effect(self, args: Mapping[str, ast.Expr], sql_write: bool = False) -> bool:
        """Whether a call changes the world (it always runs, once per input, and never merges): an SQL write,
        an HTTP method outside SAFE_METHODS, a py call not declared `pure = true`."""
        if self.effect == "write":
            return sql_write
        if self.effect == "method":
            return str(self.option(args, "method")).upper() not in SAFE_METHODS
        if self.effect == "impure":
            return self.option(args, "pure") is not True
        return False


OPS: dict[str, OpSig] = {
    "llm": OpSig(
        ("model", "prompt"),
        ("model", "prompt"),
        {
            "model": "model",
            "prompt": "template",
            "system": "template",
            "max_tokens": "int",
            "temperature": "float",
            "top_p": "float",
            "seed": "int",
        },
        defaults={"max_tokens": 256, "temperature": 0.0, "top_p": None, "seed": None},
        label="LLM",
        identity="identical model, rendered prompt, sampling and output schema",
        tool=False,
    ),
    "sql": OpSig(
        ("db", "query"),
        ("db", "query"),
        {"db": "db", "query": "sql", "timeout": "float"},
        extra_keywords=True,
        defaults={"timeout": 60.0},
        label="SQL",
        identity="identical database, normalized query and parameter values",
        effect="write",
        latency_s=0.005,
        concurrency=4,
        upstream_tokens=64,
    ),
    "http": OpSig(
        ("method", "url"),
        ("url",),
        {
            "method": "method",
            "url": "template",
            "query": "any",
            "body": "any",
            "headers": "any",
            "timeout": "float",
            "retries": "int",
            "follow_redirects": "redirects",
        },
        defaults={"method": "GET", "timeout": 30.0, "retries": 2, "follow_redirects": REDIRECT_POLICIES[0]},
        label="HTTP",
        identity="identical GET/HEAD/OPTIONS request: URL, query, headers and body",
        effect="method",
        latency_s=0.2,
        concurrency=16,
        upstream_tokens=128,
    ),
    "py": OpSig(
        ("function",),
        ("function",),
        {"function": "function", "pure": "bool", "timeout": "float"},
        extra_keywords=True,
        defaults={"pure": False, "timeout": 60.0},
        label="Python",
        identity="pure function, identical arguments",
        effect="impure",
        latency_s=0.001,
        concurrency=1,
        upstream_tokens=32,
    ),
}
DEFAULT_MAX_TOKENS: int = OPS["llm"].defaults["max_tokens"]
# Seconds a tool call may run when its `timeout` argument is not given; past it, that input's call fails.
DEFAULT_TIMEOUT_S = {kind: sig.defaults["timeout"] for kind, sig in OPS.items() if "timeout" in sig.defaults}
