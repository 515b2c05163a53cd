"""SQL for the whole system, through sqlglot: the checker, the planner and the SQL tools all use it.

Workflow SQL is written in PostgreSQL syntax with ``:name`` parameters, one statement per ``sql()``
call. These helpers parse it (errors carry a 1-based line/column inside the text), inspect it
(parameters, read or write, output columns), give it a canonical text for merging identical queries,
and transpile it to a target database with parameters in that driver's bind style. Values are never
interpolated into SQL text. Nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.tokens import TokenType

__all__ = [
    "ONE_STATEMENT",
    "Prepared",
    "SqlError",
    "SqlParseError",
    "SqlResult",
    "bind",
    "is_write",
    "normalize",
    "output_columns",
    "parse",
    "placeholders",
    "prepare",
    "returning_columns",
    "transpile",
]

# Node types that modify data, schema or session state.
_WRITE_NODES = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Copy,
    exp.TruncateTable,
    exp.Command,
    exp.Into,
    exp.Lock,
)
# Bind style per target: how a parameter ``name`` is written.
_BIND = {"duckdb": "${}", "postgres": "%({})s"}
_MARK = re.compile("\x00(\\w+)\x00")
_TOKEN = re.compile(r"<Token token_type: [^,]*, text: (.*?), line: .*?>")
_TOKEN_AT = re.compile(r"from (\d+):(\d+)")  # sqlglot's tokenizer: "Missing ' from <line>:<offset>"
ONE_STATEMENT = "one SQL statement per sql() call"
MAX_PARENS = 32  # parentheses open at once in one statement, checked before sqlglot parses
TOO_DEEP = "SQL statement nests too deeply to analyse"
_SKIP = re.compile(r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|--[^\n]*|/\*[\s\S]*?(?:\*/|$)|[()]")


class SqlError(Exception):
    """A statement cannot be prepared, or the database rejected or aborted it.

    ``message`` is the reason (the database's own words for database errors); ``sql`` is the text
    sent to the database, when there was one.
    """

    def __init__(self, message: str, *, sql: str | None = None):
        super().__init__(message)
        self.message = message
        self.sql = sql


class SqlParseError(SqlError):
    """SQL text that is not exactly one valid statement.

    ``line``/``col`` (1-based) point at the offending token's start when known.
    """

    def __init__(self, message: str, line: int | None = None, col: int | None = None):
        super().__init__(message)
        self.line = line
        self.col = col

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return f"{self.message} (line {self.line}, col {self.col})"


# -- parse ------------------------------------------------------------------------------------------------


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a 0-based character offset."""
    offset = min(max(offset, 0), len(text))
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _second_statement(text: str, dialect: str) -> tuple[int, int]:
    """Where the second non-empty statement of `text` starts."""
    seen_statement = ended = False
    for token in sqlglot.tokenize(text, read=dialect):
        if token.token_type == TokenType.SEMICOLON:
            ended = seen_statement
        elif ended:
            return _position(text, token.start)
        else:
            seen_statement = True
    return 1, 1


def parse(text: str, dialect: str = "postgres") -> exp.Expr:
    """Parse exactly one SQL statement (a trailing ``;`` is fine); raise SqlParseError otherwise.

    More than MAX_PARENS nested parentheses, or a statement whose tree exhausts the recursion limit, is a
    SqlParseError too."""
    _check_parens(text)
    try:
        statements = [s for s in sqlglot.parse(text, read=dialect) if s is not None]
    except RecursionError:
        raise SqlParseError(TOO_DEEP) from None
    except ParseError as e:
        err = e.errors[0] if e.errors else {}
        message = _TOKEN.sub(lambda m: repr(m.group(1)), err.get("description") or str(e).splitlines()[0])
        line, col = err.get("line"), err.get("col")
        if line is not None and col is not None:
            # sqlglot reports the column where the offending token ends; point at its start.
            col = max(1, col - len(err.get("highlight") or "") + 1)
        raise SqlParseError(message, line, col) from None
    except TokenError as e:
        cause = e.__cause__ or e
        message = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        at = _TOKEN_AT.search(message) or _TOKEN_AT.search(str(e))
        raise SqlParseError(message, *(_position(text, int(at.group(2))) if at else (None, None))) from None
    if not statements:
        raise SqlParseError("empty SQL statement", 1, 1)
    if len(statements) > 1:
        raise SqlParseError(ONE_STATEMENT, *_second_statement(text, dialect))
    return statements[0]


def _check_parens(text: str) -> None:
    """Reject parentheses nested deeper than MAX_PARENS (those inside quotes and comments don't count)."""
    depth = 0
    for m in _SKIP.finditer(text):
        tok = m.group(0)
        if tok == "(":
            depth += 1
            if depth > MAX_PARENS:
                raise SqlParseError(
                    f"parentheses nest more than {MAX_PARENS} levels deep", *_position(text, m.start())
                )
        elif tok == ")":
            depth = max(depth - 1, 0)


# -- inspect ----------------------------------------------------------------------------------------------


def _param_name(node: exp.Expr) -> str | None:
    """Name of a named parameter node (``:name``, ``%(name)s``, DuckDB ``$name``), else None."""
    if isinstance(node, exp.Placeholder):
        name = node.name
    elif isinstance(node, exp.Parameter):
        name = node.name
        if name.isdigit():
            return None
    else:
        return None
    return name or None


def _params(expr: exp.Expr):
    return (n for n in expr.walk() if isinstance(n, (exp.Placeholder, exp.Parameter)))


def placeholders(expr: exp.Expr) -> list[str]:
    """Distinct named parameters in order of first appearance."""
    names: dict[str, None] = {}
    for node in _params(expr):
        name = _param_name(node)
        if name:
            names[name] = None
    return list(names)


def is_write(expr: exp.Expr | str) -> bool:
    """True unless the statement is a plain query (no DML/DDL, INTO, locking or CTE writes).

    Text with several statements counts as a write. Unknown statements count as writes.
    Side-effecting functions (``nextval``, ``pg_advisory_lock``) are not detected.
    """
    if isinstance(expr, str):
        try:
            statements = [s for s in sqlglot.parse(expr, read="postgres") if s is not None]
        except (ParseError, TokenError):
            return True
        if len(statements) != 1:
            return True
        expr = statements[0]
    if not isinstance(expr, exp.Query):
        return True
    return any(isinstance(n, _WRITE_NODES) for n in expr.walk())


def returning_columns(expr: exp.Expr) -> list[str] | None:
    """Column names a write's RETURNING clause gives ([] without one), or None when unknown (``*``)."""
    returning = expr.args.get("returning")
    if returning is None:
        return []
    return _names(returning.expressions)


def _names(selects: list[exp.Expr]) -> list[str] | None:
    names = []
    for sel in selects:
        if isinstance(sel, exp.Star) or (isinstance(sel, exp.Column) and isinstance(sel.this, exp.Star)):
            return None
        name = sel.alias_or_name
        if not name:
            return None
        names.append(name)
    return names


def output_columns(expr: exp.Expr) -> list[str] | None:
    """Column names a read returns, or None when they can't be known statically (``*``, writes)."""
    if is_write(expr) or not isinstance(expr, exp.Query):  # is_write: every non-Query is a write
        return None
    return _names(expr.selects)


def normalize(expr: exp.Expr, dialect: str = "postgres") -> str:
    """Canonical PostgreSQL text of a statement, for merging identical queries.

    Folds whitespace, keyword and unquoted-identifier case, comments, cast and alias syntax,
    string quoting and the parameter style (``:x`` and ``%(x)s`` both become ``%(x)s``).
    Literal values and their spelling, predicate order and quoted identifiers are kept as written,
    so two texts normalize equal only if they mean the same query.
    """
    tree = normalize_identifiers(expr.copy(), dialect=dialect)
    for node in list(_params(tree)):
        name = _param_name(node)
        if name:
            node.replace(exp.Placeholder(this=name))
    return tree.sql(dialect="postgres", comments=False, normalize_functions="upper")


# -- transpile --------------------------------------------------------------------------------------------

_FTS_DOC = {"to_tsvector"}
_FTS_QUERY = {"plainto_tsquery", "to_tsquery", "websearch_to_tsquery"}


def _words(arg: exp.Expr) -> exp.Expr:
    return exp.func(
        "list_filter",
        exp.func("regexp_split_to_array", exp.func("lower", arg), exp.Literal.string("[^[:alnum:]]+")),
        exp.Lambda(
            this=exp.NEQ(this=exp.column("w"), expression=exp.Literal.string("")),
            expressions=[exp.to_identifier("w")],
        ),
    )


def _duckdb_compat(node: exp.Expr) -> exp.Expr:
    """Rewrite PostgreSQL constructs DuckDB lacks (applied only when targeting DuckDB).

    ``to_tsvector(cfg, doc) @@ plainto_tsquery(cfg, q)`` becomes "every word of q occurs as a word
    of doc" (case-insensitive; no stemming or stop words: an approximation of PostgreSQL's
    full-text match). ``json_agg(x ORDER BY ...)`` becomes ``to_json(list(x ORDER BY ...))``;
    ``json_build_object`` becomes ``json_object``.
    """
    if isinstance(node, exp.MatchAgainst) and len(node.expressions) == 1:
        funcs = {f.name.lower(): f for f in (node.this, node.expressions[0]) if isinstance(f, exp.Anonymous)}
        doc = next((funcs[n] for n in _FTS_DOC if n in funcs), None)
        query = next((funcs[n] for n in _FTS_QUERY if n in funcs), None)
        if doc is not None and query is not None:
            return exp.func("list_has_all", _words(doc.expressions[-1]), _words(query.expressions[-1]))
    if isinstance(node, exp.Anonymous) and node.name.lower() == "json_build_object":
        return exp.Anonymous(this="json_object", expressions=node.expressions)
    if isinstance(node, exp.JSONArrayAgg):
        inner = node.this.transform(_duckdb_compat)
        return exp.Anonymous(this="to_json", expressions=[exp.Anonymous(this="list", expressions=[inner])])
    return node


def transpile(expr: exp.Expr, dialect: str) -> tuple[str, list[str]]:
    """SQL text for ``dialect`` ("duckdb" or "postgres"/psycopg) and its parameter names.

    DuckDB binds ``$name``; psycopg binds ``%(name)s`` (every other ``%`` is doubled).
    Positional parameters (``$1``, ``?``, ``%s``) are rejected: bind by name. For DuckDB a few
    PostgreSQL-only constructs are rewritten (see ``_duckdb_compat``).
    """
    if dialect not in _BIND:
        raise ValueError(f"unsupported SQL dialect {dialect!r}; expected one of {sorted(_BIND)}")
    order: dict[str, None] = {}

    def mark(node: exp.Expr) -> exp.Expr:
        if not isinstance(node, (exp.Placeholder, exp.Parameter)):
            return node
        name = _param_name(node)
        if not name:
            raise SqlError(f"positional parameter {node.sql(dialect=dialect)} is not supported; use :name")
        order[name] = None
        return exp.Var(this=f"\x00{name}\x00")

    if dialect == "duckdb":
        expr = expr.transform(_duckdb_compat)

    text = expr.transform(mark).sql(dialect=dialect, comments=False)
    if text.count("\x00") != 2 * len(_MARK.findall(text)):
        raise SqlError("SQL text contains a NUL character")
    if dialect == "postgres":
        text = text.replace("%", "%%")
    style = _BIND[dialect]
    return _MARK.sub(lambda m: style.format(m.group(1)), text), list(order)


# -- prepare and bind -------------------------------------------------------------------------------------


class Prepared(NamedTuple):
    """A statement ready for one target: parsed tree, target text, parameter names, write flag."""

    expr: exp.Expr
    text: str
    names: list[str]
    write: bool


@lru_cache(maxsize=4096)
def _prepare_text(sql: str, dialect: str) -> Prepared:
    expr = parse(sql)
    return Prepared(expr, *transpile(expr, dialect), is_write(expr))


def prepare(sql: exp.Expr | str, dialect: str) -> Prepared:
    """Parse (PostgreSQL text, cached) and transpile a statement for ``dialect``."""
    if isinstance(sql, str):
        return _prepare_text(sql, dialect)
    return Prepared(sql, *transpile(sql, dialect), is_write(sql))


def bind(names: list[str], params: dict[str, Any] | None) -> dict[str, Any]:
    """The parameter values a statement needs, by name; missing ones raise SqlError."""
    params = params or {}
    missing = [n for n in names if n not in params]
    if missing:
        raise SqlError(f"missing SQL parameter(s): {', '.join(missing)}")
    return {n: params[n] for n in names}


@dataclass(frozen=True)
class SqlResult:
    """Rows of one statement; ``rowcount`` is the affected-row count for writes."""

    columns: list[str]
    rows: list[dict[str, Any]]
    rowcount: int
    seconds: float
