"""Text → typed AST, through the lark grammar shipped in `halo.grammar`."""

from __future__ import annotations

import os
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import cast

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.tree import Meta

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
    "LIST": "'[]'",
    "$END": "end of file",
}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}

# Input limits: every file parses within bounded memory and recursion, or fails with a located error.
MAX_FILE_BYTES = 1 << 20  # one .halo file, UTF-8 encoded
MAX_NESTING = 64  # open brackets ( [ { at any point, the workflow's own braces included
MAX_NUMBER_DIGITS = 64  # digits in one number literal
MAX_STRING_BYTES = 256 << 10  # one string literal as written, quotes included, UTF-8 encoded
_OPEN, _CLOSE = {"LPAR", "LSQB", "LBRACE"}, {"RPAR", "RSQB", "RBRACE"}


@cache
def _lark() -> Lark:
    grammar = resources.files("halo.grammar").joinpath("halo.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def parse(source: str, file: str = "<string>") -> ast.Module:
    """Parse workflow source text; syntax errors and exceeded limits raise HaloError located at file:line:col."""
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        raise HaloError.at(
            Pos(file, 1, 1), f"file is {size:,} bytes; the limit is {MAX_FILE_BYTES:,} (1 MiB)"
        )
    _check_nesting(source, file)
    try:
        tree = _lark().parse(source)
    except UnexpectedInput as exc:
        raise HaloError.at(_error_pos(exc, source, file), _describe(exc, source)) from None
    module = ast.Module(file=file, source=source)
    try:
        _Build(file, module).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, HaloError):
            raise exc.orig_exc from None
        raise
    return module


def _check_nesting(source: str, file: str) -> None:
    """Reject brackets nested deeper than MAX_NESTING before the (recursive) tree transformer sees them."""
    depth = 0
    try:
        for tok in _lark().lex(source):
            if tok.type in _OPEN:
                depth += 1
                if depth > MAX_NESTING:
                    raise HaloError.at(
                        Pos(file, tok.line or 1, tok.column or 1),
                        f"brackets nest more than {MAX_NESTING} levels deep",
                    )
            elif tok.type in _CLOSE:
                depth -= 1
    except UnexpectedInput:
        return  # the parser reports the bad character, located


def _error_pos(exc: UnexpectedInput, source: str, file: str) -> Pos:
    at_end = isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END")
    if at_end or exc.line is None or exc.line < 1:
        text = source.rstrip()  # just after the last character written
        return Pos(file, text.count("\n") + 1, len(text) - (text.rfind("\n") + 1) + 1)
    col = max(exc.column or 1, 1)
    if isinstance(exc, UnexpectedCharacters) and source[_lex_pos(exc) - 2 : _lex_pos(exc) + 1] == '"""':
        col = max(col - 2, 1)  # an unterminated """string lexes as "" then "
    return Pos(file, exc.line, col)


def _lex_pos(exc: UnexpectedCharacters) -> int:
    """Where the lexer stopped: lark's UnexpectedCharacters sets pos_in_stream to that offset, but the base
    class declares the attribute as `pos_in_stream = None`, so its type reads as None."""
    return cast(int, exc.pos_in_stream)


def _describe(exc: UnexpectedInput, source: str) -> str:
    if isinstance(exc, UnexpectedCharacters):
        pos = _lex_pos(exc)
        char = source[pos] if pos < len(source) else "?"
        if char == '"':
            if source[pos - 2 : pos + 1] == '"""':
                return 'unterminated """string"""'
            return "unterminated string"
        return f"unexpected character {char!r}"
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        shown = "end of file" if tok.type == "$END" else repr(str(tok))
        hint = _hint(exc)
        if hint:
            return f"unexpected {shown}, {hint}"
        return f"unexpected {shown}, expected {_expected(exc.expected)}"
    if isinstance(exc, UnexpectedEOF):
        return f"unexpected end of file, expected {_expected(exc.expected)}"
    return str(exc).splitlines()[0]


def _hint(exc: UnexpectedToken) -> str | None:
    """A friendlier explanation for the common mistakes, read off the parser's stack."""
    try:
        stack = exc.interactive_parser.parser_state.value_stack
    except AttributeError:
        return None
    kinds = [getattr(v, "type", None) for v in stack[-3:]]
    kinds = [None] * (3 - len(kinds)) + kinds
    if kinds[1:] == ["NAME", "EQUAL"] and kinds[0] not in ("DB", "MODEL") and set(exc.expected) == {"NAME"}:
        return (
            "expected an operator call after '=': a binding calls llm(...), sql(...), http(...), "
            "py(...) or a workflow (constants belong in parameter defaults)"
        )
    if kinds == ["NAME", "EQUAL", "NAME"] and set(exc.expected) == {"LPAR"}:
        return f"expected '(' after '{stack[-1]}': a binding calls an operator or workflow, e.g. {stack[-1]}(...)"
    return None


_VALUE_TERMINALS = {"STRING", "LONG_STRING", "NUMBER", "NAME", "LSQB", "LBRACE"}


def _expected(names) -> str:
    names = set(names)
    words = set()
    if _VALUE_TERMINALS <= names:
        names -= _VALUE_TERMINALS
        words.add("a value")
    if {"STRING", "LONG_STRING"} <= names:
        names.discard("LONG_STRING")
    words |= {_terminal_name(n) for n in names}
    shown = sorted(words)
    if len(shown) > 6:
        shown = shown[:6] + ["..."]
    return " or ".join(shown) if len(shown) < 3 else ", ".join(shown)


def _terminal_name(name: str) -> str:
    if name in _TERMINAL_NAMES:
        return _TERMINAL_NAMES[name]
    try:
        pattern = _lark().get_terminal(name).pattern
    except KeyError:
        return f"'{name.lower()}'"
    if pattern.type == "str":
        return f"'{pattern.value}'"
    return f"'{name.lower()}'"


def _unescape(body: str) -> str:
    return _string('"' + body + '"')[0]


def _string(raw: str) -> tuple[str, tuple[int, ...]]:
    """Value of a "..." token and, for each value character, its index in the token."""
    out, offsets = [], []
    i, end = 1, len(raw) - 1
    while i < end:
        c = raw[i]
        if c == "\\" and i + 1 < end:
            nxt = raw[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                offsets.append(i)
            else:  # unknown escapes are kept as written
                out += ["\\", nxt]
                offsets += [i, i + 1]
            i += 2
            continue
        out.append(c)
        offsets.append(i)
        i += 1
    return "".join(out), tuple(offsets)


def _long_string(raw: str) -> str:
    return _long_string_offsets(raw)[0]


_WS_ONLY = re.compile(r"[ \t]+")
_INDENT = re.compile(r"[ \t]*")


def _long_string_offsets(raw: str) -> tuple[str, tuple[int, ...]]:
    """Value of a triple-quoted token (dedented like textwrap.dedent, first newline and trailing
    whitespace dropped) and, for each value character, its index in the token."""
    body = raw[3:-3]
    lines, start = [], 3
    for line in body.split("\n"):
        lines.append((line, start))
        start += len(line) + 1
    margin: str | None = None
    for line, _ in lines:
        if line.strip(" \t") == "":
            continue
        indent_m = _INDENT.match(line)  # [ \t]* matches every string
        indent = indent_m.group(0) if indent_m else ""
        if margin is None or indent.startswith(margin):
            margin = indent if margin is None else margin
        elif margin.startswith(indent):
            margin = indent
        else:
            k = 0
            while k < min(len(margin), len(indent)) and margin[k] == indent[k]:
                k += 1
            margin = margin[:k]
    margin = margin or ""
    out: list[str] = []
    offsets: list[int] = []
    for n, (line, at) in enumerate(lines):
        if n:
            out.append("\n")
            offsets.append(at - 1)
        if _WS_ONLY.fullmatch(line):
            continue
        cut = len(margin) if line.startswith(margin) else 0
        out.extend(line[cut:])
        offsets.extend(range(at + cut, at + len(line)))
    value = "".join(out)
    if value.startswith("\n"):
        value, offsets = value[1:], offsets[1:]
    value = value.rstrip()
    return value, tuple(offsets[: len(value)])


def db_target(kind: str, target: str, file: str) -> str:
    """Where a database lives: a relative DuckDB path is taken relative to the declaring file's folder
    (like imports) and made absolute; `:memory:` databases and PostgreSQL DSNs are kept as written."""
    if kind != "duckdb" or target.startswith(":memory:") or target == "":
        return target
    return os.path.normpath(Path(file).parent.absolute() / target)


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
    def string(self, meta: Meta, children: list[Token]) -> ast.Str:
        tok = children[0]
        raw = str(tok)
        size = len(raw.encode("utf-8", "surrogatepass"))
        if size > MAX_STRING_BYTES:
            raise HaloError.at(
                self._pos(tok),
                f"string literal is {size:,} bytes; the limit is {MAX_STRING_BYTES:,} (256 KiB)",
            )
        text, offsets = _long_string_offsets(raw) if tok.type == "LONG_STRING" else _string(raw)
        return ast.Str(text, Pos(self.file, meta.line, meta.column), raw, offsets)

    def number(self, children):
        tok = children[0]
        text = str(tok)
        digits = sum(c.isdigit() for c in text)
        if digits > MAX_NUMBER_DIGITS:
            raise HaloError.at(
                self._pos(tok), f"number literal has {digits:,} digits; the limit is {MAX_NUMBER_DIGITS}"
            )
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
        return ast.ListExpr(
            tuple(c for c in children if c is not None), Pos(self.file, meta.line, meta.column)
        )

    @v_args(meta=True)
    def dict(self, meta, children):
        return ast.DictExpr(
            tuple(c for c in children if c is not None), Pos(self.file, meta.line, meta.column)
        )

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
        if "\x00" in target.value:
            raise HaloError.at(target.pos, "a database target cannot contain a NUL character")
        return ast.DbDecl(
            str(name), str(kind), db_target(str(kind), target.value, self.file), self._pos(name)
        )

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
