"""Text → typed AST, through the lark grammar shipped in `halo.grammar`."""

from __future__ import annotations

import re
import textwrap
from functools import cache
from importlib import resources

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from halo import ast
from halo.errors import HaloError, Pos

_TERMINAL_NAMES = {
    "NAME": "a name",
    "STRING": "a string",
    "LONG_STRING": 'a """string"""',
    "NUMBER": "a number",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "COLON": "':'",
    "EQUAL": "'='",
    "DOT": "'.'",
    "__ANON_0": "'->'",
    "LIST": "'[]'",
    "$END": "end of file",
}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


@cache
def _lark() -> Lark:
    grammar = resources.files("halo.grammar").joinpath("halo.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def parse(source: str, file: str = "<string>") -> ast.Module:
    """Parse workflow source text; syntax errors raise HaloError located at file:line:col."""
    try:
        tree = _lark().parse(source)
    except UnexpectedInput as exc:
        raise HaloError.at(Pos(file, exc.line if exc.line > 0 else 1, max(exc.column, 1)),
                           _describe(exc, source)) from None
    module = ast.Module(file=file, source=source)
    _Build(file, module).transform(tree)
    return module


def _describe(exc: UnexpectedInput, source: str) -> str:
    if isinstance(exc, UnexpectedCharacters):
        char = source[exc.pos_in_stream] if exc.pos_in_stream < len(source) else "?"
        if char == '"':
            return "unterminated string"
        return f"unexpected character {char!r}"
    if isinstance(exc, UnexpectedEOF):
        return f"unexpected end of file, expected {_expected(exc.expected)}"
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        shown = "end of file" if tok.type == "$END" else repr(str(tok))
        return f"unexpected {shown}, expected {_expected(exc.expected)}"
    return str(exc).splitlines()[0]


def _expected(names) -> str:
    words = sorted({_TERMINAL_NAMES.get(n, f"'{n.lower()}'") for n in names})
    if len(words) > 6:
        words = words[:6] + ["..."]
    return " or ".join(words) if len(words) < 3 else ", ".join(words)


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), body)


def _long_string(raw: str) -> str:
    body = textwrap.dedent(raw[3:-3])
    if body.startswith("\n"):
        body = body[1:]
    return body.rstrip()


class _Build(Transformer):
    """Builds AST nodes bottom-up; positions come from tokens and tree metadata."""

    def __init__(self, file: str, module: ast.Module):
        super().__init__()
        self.file = file
        self.module = module

    def _pos(self, item) -> Pos:
        if isinstance(item, Token):
            return Pos(self.file, item.line or 1, item.column or 1)
        meta = getattr(item, "meta", None)
        if meta is not None and not meta.empty:
            return Pos(self.file, meta.line, meta.column)
        return Pos(self.file, 1, 1)

    @v_args(meta=True)
    def string(self, meta, children):
        tok: Token = children[0]
        text = _long_string(str(tok)) if tok.type == "LONG_STRING" else _unescape(str(tok)[1:-1])
        return ast.Str(text, Pos(self.file, meta.line, meta.column))

    def number(self, children):
        tok = children[0]
        text = str(tok)
        value = float(text) if any(c in text for c in ".eE") else int(text)
        return ast.Num(value, self._pos(tok))

    @v_args(meta=True)
    def true(self, meta, _):
        return ast.Bool(True, Pos(self.file, meta.line, meta.column))

    @v_args(meta=True)
    def false(self, meta, _):
        return ast.Bool(False, Pos(self.file, meta.line, meta.column))

    @v_args(meta=True)
    def null(self, meta, _):
        return ast.Null(Pos(self.file, meta.line, meta.column))

    def ref(self, children):
        return ast.Ref(tuple(str(t) for t in children), self._pos(children[0]))

    @v_args(meta=True)
    def list(self, meta, children):
        return ast.ListExpr(tuple(c for c in children if c is not None), Pos(self.file, meta.line, meta.column))

    @v_args(meta=True)
    def dict(self, meta, children):
        return ast.DictExpr(tuple(c for c in children if c is not None), Pos(self.file, meta.line, meta.column))

    def pair(self, children):
        key, value = children
        return (key.value if isinstance(key, ast.Str) else str(key), value)

    def type(self, children):
        name, is_list = children
        return ast.TypeRef(str(name), is_list is not None, self._pos(name))

    def param(self, children):
        name, typ, default = children
        return ast.Param(str(name), typ, default, self._pos(name))

    def field(self, children):
        name, typ = children
        return ast.Field(str(name), typ, self._pos(name))

    def schema(self, children):
        return tuple(c for c in children if c is not None)

    def arg(self, children):
        value = children[0]
        return ast.Arg(None, value, value.pos)

    def kwarg(self, children):
        name, value = children
        return ast.Arg(str(name), value, self._pos(name))

    def call(self, children):
        name, *args = children
        return ast.Call(str(name), tuple(a for a in args if a is not None), self._pos(name))

    def binding(self, children):
        name, call, schema = children
        return ast.Binding(str(name), call, schema, self._pos(name))

    def model_decl(self, children):
        name, model_id = children
        return ast.ModelDecl(str(name), model_id.value, self._pos(name))

    def db_decl(self, children):
        name, kind, target = children
        return ast.DbDecl(str(name), str(kind), target.value, self._pos(name))

    def ret_item(self, children):
        value = children[0]
        key = value.parts[-1] if isinstance(value, ast.Ref) else ""
        return ast.ReturnItem(key, value, value.pos)

    def named_ret(self, children):
        name, value = children
        return ast.ReturnItem(str(name), value, self._pos(name))

    @v_args(meta=True)
    def return_stmt(self, meta, children):
        return ("return", [c for c in children if c is not None], Pos(self.file, meta.line, meta.column))

    def import_stmt(self, children):
        self.module.imports.append(children[0])
        return None

    def workflow(self, children):
        name, *rest = children
        wf = ast.Workflow(str(name), [], [], [], [], [], self._pos(name))
        for item in rest:
            match item:
                case None:
                    pass
                case ast.Param():
                    wf.params.append(item)
                case ast.ModelDecl():
                    wf.models.append(item)
                case ast.DbDecl():
                    wf.dbs.append(item)
                case ast.Binding():
                    wf.bindings.append(item)
                case ("return", items, _pos):
                    wf.returns.extend(items)
                    wf.has_return = True
        self.module.workflows.append(wf)
        return wf

    def start(self, children):
        return self.module

    def __default__(self, data, children, meta):
        return Tree(data, children, meta)
