"""Typed syntax tree of the workflow language, each node carrying its source position."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from halo.errors import Pos

SCALAR_TYPES = ("text", "int", "float", "bool", "json")


@dataclass(frozen=True)
class TypeRef:
    name: str
    is_list: bool
    pos: Pos

    def __str__(self) -> str:
        return self.name + ("[]" if self.is_list else "")


@dataclass(frozen=True)
class Str:
    """A string literal. `raw` is the token as written and `offsets[i]` the index in `raw` of `value[i]`,
    so positions inside the string (template holes, SQL errors) map back to the file."""

    value: str
    pos: Pos
    raw: str = field(default="", compare=False, repr=False)
    offsets: tuple[int, ...] | None = field(default=None, compare=False, repr=False)

    def pos_at(self, index: int) -> Pos:
        """The file position of `value[index]` (clamped to the string)."""
        if self.offsets is None or not self.raw:
            return Pos(self.pos.file, self.pos.line, self.pos.col + 1 + max(0, min(index, len(self.value))))
        if not self.offsets:
            r = min(len(self.raw), 3 if self.raw.startswith('"""') else 1)
        elif index >= len(self.offsets):
            r = self.offsets[-1] + 1
        else:
            r = self.offsets[max(index, 0)]
        newlines = self.raw.count("\n", 0, r)
        if newlines == 0:
            return Pos(self.pos.file, self.pos.line, self.pos.col + r)
        return Pos(self.pos.file, self.pos.line + newlines, r - self.raw.rfind("\n", 0, r))


@dataclass(frozen=True)
class Num:
    value: int | float
    pos: Pos


@dataclass(frozen=True)
class Bool:
    value: bool
    pos: Pos


@dataclass(frozen=True)
class Null:
    pos: Pos


@dataclass(frozen=True)
class Ref:
    """`name` or `name.field.field`."""

    parts: tuple[str, ...]
    pos: Pos

    @property
    def name(self) -> str:
        return self.parts[0]

    def __str__(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class ListExpr:
    items: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True)
class DictExpr:
    items: tuple[tuple[str, Expr], ...]
    pos: Pos


Expr = Str | Num | Bool | Null | Ref | ListExpr | DictExpr


@dataclass(frozen=True)
class Param:
    name: str
    type: TypeRef
    default: Expr | None
    pos: Pos


@dataclass(frozen=True)
class ModelDecl:
    name: str
    model_id: str
    pos: Pos


@dataclass(frozen=True)
class DbDecl:
    name: str
    kind: str
    target: str
    pos: Pos


@dataclass(frozen=True)
class Arg:
    name: str | None
    value: Expr
    pos: Pos


@dataclass(frozen=True)
class Field:
    name: str
    type: TypeRef
    pos: Pos


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Arg, ...]
    pos: Pos

    def positional(self) -> list[Expr]:
        return [a.value for a in self.args if a.name is None]

    def kwargs(self) -> dict[str, Expr]:
        return {a.name: a.value for a in self.args if a.name is not None}


@dataclass(frozen=True)
class Binding:
    name: str
    call: Call
    schema: tuple[Field, ...] | None
    pos: Pos


@dataclass(frozen=True)
class ReturnItem:
    key: str
    value: Expr
    pos: Pos


@dataclass
class Workflow:
    name: str
    params: list[Param]
    models: list[ModelDecl]
    dbs: list[DbDecl]
    bindings: list[Binding]
    returns: list[ReturnItem]
    pos: Pos
    has_return: bool = False


@dataclass
class Module:
    """One parsed file: its imports (as written) and workflows."""

    file: str
    source: str
    imports: list[Str] = field(default_factory=list)
    workflows: list[Workflow] = field(default_factory=list)


def literal_value(expr: Expr) -> Any:
    """The Python value of a constant expression; raises ValueError for references."""
    match expr:
        case Str(value=v) | Num(value=v) | Bool(value=v):
            return v
        case Null():
            return None
        case ListExpr(items=items):
            return [literal_value(i) for i in items]
        case DictExpr(items=items):
            return {k: literal_value(v) for k, v in items}
    raise ValueError(f"{expr} is not a constant")


def refs_in(expr: Expr) -> list[Ref]:
    """All references inside an expression, in source order."""
    match expr:
        case Ref():
            return [expr]
        case ListExpr(items=items):
            return [r for i in items for r in refs_in(i)]
        case DictExpr(items=items):
            return [r for _, v in items for r in refs_in(v)]
    return []
