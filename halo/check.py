"""Static checks over a program: names, types, schemas, SQL and templates. Errors are located diagnostics."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import networkx as nx

from halo import ast, sql, types
from halo.errors import Diagnostic, HaloError, Pos
from halo.program import Program
from halo.template import Hole, Template, TemplateError
from halo.types import HTTP_METHODS, OPS, Type
from halo.urls import ORIGIN_LITERAL, origin_hole


@dataclass
class BindingInfo:
    """What the checker learned about one binding: its arguments by slot, output type and SQL facts."""

    binding: ast.Binding
    op: str  # llm | sql | http | py | workflow
    args: dict[str, ast.Expr]
    out: Type
    deps: list[str] = field(default_factory=list)
    sql: list | None = None  # [the parsed statement]
    sql_write: bool = False
    templates: dict[str, Template] = field(default_factory=dict)


@dataclass
class WorkflowInfo:
    workflow: ast.Workflow
    bindings: dict[str, BindingInfo] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    return_type: Type = types.JSON


@dataclass
class CheckResult:
    program: Program
    workflows: dict[str, WorkflowInfo] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    def raise_on_error(self) -> None:
        if self.errors:
            raise HaloError(self.errors)


MAX_CALL_DEPTH = 32  # workflows calling workflows, the outermost included


def check(program: Program) -> CheckResult:
    """Check every workflow of the program; callee workflows are checked before their callers."""
    result = CheckResult(program)
    done: set[str] = set()
    for name in program.workflows:
        _check_named(program, name, result, done, [])
    unique = {(d.pos, d.message, d.severity): d for d in result.diagnostics}
    result.diagnostics = sorted(unique.values(), key=lambda d: (d.pos.file, d.pos.line, d.pos.col))
    return result


def _check_named(program: Program, name: str, result: CheckResult, done: set[str], stack: list[str]) -> None:
    if name in done:
        return
    wf = program.workflows[name]
    for b in wf.bindings:
        callee = b.call.func
        if callee in program.workflows and callee not in OPS:
            if callee in stack or callee == name:
                result.diagnostics.append(
                    Diagnostic(b.call.pos, f"workflow '{callee}' calls itself (recursion is not allowed)")
                )
                continue
            if len(stack) + 2 > MAX_CALL_DEPTH:
                result.diagnostics.append(
                    Diagnostic(b.call.pos, f"workflow calls nest more than {MAX_CALL_DEPTH} deep")
                )
                continue
            _check_named(program, callee, result, done, [*stack, name])
    done.add(name)
    result.workflows[name] = _WorkflowChecker(program, wf, result).run()


class _WorkflowChecker:
    def __init__(self, program: Program, wf: ast.Workflow, result: CheckResult):
        self.program, self.wf, self.result = program, wf, result
        self.info = WorkflowInfo(wf)
        self.scope: dict[str, tuple[str, Pos]] = {}  # name -> (what, where)
        self.param_types: dict[str, Type] = {}
        self.models = {m.name: m for m in wf.models}
        self.dbs = {d.name: d for d in wf.dbs}
        self.used: set[str] = set()
        self.index = {b.name: i for i, b in reversed(list(enumerate(wf.bindings)))}

    def error(self, pos: Pos, msg: str) -> None:
        self.result.diagnostics.append(Diagnostic(pos, msg))

    def warn(self, pos: Pos, msg: str) -> None:
        self.result.diagnostics.append(Diagnostic(pos, msg, "warning"))

    def run(self) -> WorkflowInfo:
        self._declare()
        for b in self.wf.bindings:
            if b.name in self.info.bindings or self.scope.get(b.name, ("", None))[0] != "binding":
                continue
            self.info.bindings[b.name] = bi = self._binding(b)
            if bi.op == "sql":
                self._sql_facts(bi)
        # Second pass: types of references can now be resolved in any declaration order.
        for b in self.wf.bindings:
            found = self.info.bindings.get(b.name)
            if found is not None and self.scope[b.name][1] == b.pos:
                self._check_args(found)
        self._order()
        self._returns()
        self._unused()
        return self.info

    def _declare(self) -> None:
        for kind, items in (
            ("parameter", self.wf.params),
            ("model", self.wf.models),
            ("database", self.wf.dbs),
            ("binding", self.wf.bindings),
        ):
            for item in items:
                if item.name in self.scope:
                    what, where = self.scope[item.name]
                    self.error(
                        item.pos, f"duplicate name '{item.name}' (already a {what} at line {where.line})"
                    )
                    continue
                self.scope[item.name] = (kind, item.pos)
        for p in self.wf.params:
            t = types.from_ref(p.type)
            if t is None:
                self.error(p.type.pos, f"unknown type '{p.type.name}' (types: text, int, float, bool, json)")
                t = types.JSON
            self.param_types[p.name] = t
            if p.default is not None and ast.refs_in(p.default):
                self.error(p.default.pos, f"default of '{p.name}' must be a constant")
            elif p.default is not None:
                dt = _literal_type(p.default)
                if not types.assignable(dt, t):
                    self.error(p.default.pos, f"default of '{p.name}' is {dt}, expected {t}")
        for d in self.wf.dbs:
            if d.kind not in ("duckdb", "postgres"):
                self.error(d.pos, f"unknown database kind '{d.kind}' (use duckdb(...) or postgres(...))")

    # -- bindings ---------------------------------------------------------------------------------------

    def _binding(self, b: ast.Binding) -> BindingInfo:
        func = b.call.func
        if func in OPS:
            args = self._slot_args(b.call, OPS[func])
            return BindingInfo(b, func, args, self._output_type(b, func, args))
        callee = self.program.workflows.get(func)
        if callee is None:
            self.error(b.call.pos, f"unknown operator or workflow '{func}' (operators: llm, sql, http, py)")
            return BindingInfo(b, "unknown", {}, types.JSON)
        info = self.result.workflows.get(func)
        out = info.return_type if info else types.JSON
        if b.schema:
            self.error(b.schema[0].pos, "a workflow call takes its output type from the callee's return")
        return BindingInfo(b, "workflow", dict(b.call.kwargs()), out)

    def _slot_args(self, call: ast.Call, sig) -> dict[str, ast.Expr]:
        args: dict[str, ast.Expr] = {}
        positional = [a for a in call.args if a.name is None]
        slots = list(sig.positional)
        if call.func == "http" and len(positional) == 1:
            slots = ["url"]
        if len(positional) > len(slots):
            self.error(
                positional[len(slots)].pos, f"{call.func}() takes at most {len(slots)} positional argument(s)"
            )
        for slot, a in zip(slots, positional, strict=False):
            args[slot] = a.value
        for a in call.args:
            if a.name is None:
                continue
            if a.name in args:
                self.error(a.pos, f"argument '{a.name}' given twice")
                continue
            if a.name not in sig.keywords and not sig.extra_keywords:
                known = ", ".join(sorted(sig.keywords))
                self.error(a.pos, f"{call.func}() has no argument '{a.name}' (arguments: {known})")
                continue
            args[a.name] = a.value
        for req in sig.required:
            if req not in args:
                self.error(call.pos, f"{call.func}() needs argument '{req}'")
        return args

    def _output_type(self, b: ast.Binding, op: str, args: dict[str, ast.Expr]) -> Type:
        declared = self._schema_type(b.schema) if b.schema else None
        if op == "llm":
            return declared or types.TEXT
        if op == "sql":
            return Type("table", declared.fields if declared else None)
        return declared or types.JSON

    def _schema_type(self, schema: tuple[ast.Field, ...]) -> Type:
        fields, seen = [], set()
        for f in schema:
            t = types.from_ref(f.type)
            if t is None:
                self.error(f.type.pos, f"unknown type '{f.type.name}' (types: text, int, float, bool, json)")
                t = types.JSON
            if f.name in seen:
                self.error(f.pos, f"duplicate field '{f.name}' in output schema")
            seen.add(f.name)
            fields.append((f.name, t))
        return types.struct(fields)

    def _check_args(self, bi: BindingInfo) -> None:
        if bi.op == "workflow":
            self._check_workflow_call(bi)
            return
        if bi.op not in OPS:
            return
        sig = OPS[bi.op]
        for name, expr in bi.args.items():
            kind = sig.keywords.get(name, "value")
            self._check_arg(bi, name, kind, expr)
        if bi.op == "sql":
            self._check_sql(bi)
        self._check_tool_options(bi)
        bi.deps = sorted(
            {
                r.name
                for e in bi.args.values()
                for r in ast.refs_in(e)
                if self.scope.get(r.name, ("",))[0] == "binding"
            }
            | {
                h.parts[0]
                for t in bi.templates.values()
                for h in t.holes()
                if self.scope.get(h.parts[0], ("",))[0] == "binding"
            }
        )

    def _check_arg(self, bi: BindingInfo, name: str, kind: str, expr: ast.Expr) -> None:
        match kind:
            case "model":
                if not (isinstance(expr, ast.Ref) and len(expr.parts) == 1 and expr.name in self.models):
                    known = ", ".join(sorted(self.models)) or "none declared"
                    self.error(expr.pos, f"unknown model '{_show(expr)}' (models: {known})")
                else:
                    self.used.add(expr.name)
            case "db":
                if not (isinstance(expr, ast.Ref) and len(expr.parts) == 1 and expr.name in self.dbs):
                    known = ", ".join(sorted(self.dbs)) or "none declared"
                    self.error(expr.pos, f"unknown database '{_show(expr)}' (databases: {known})")
                else:
                    self.used.add(expr.name)
            case "template":
                if not isinstance(expr, ast.Str):
                    if isinstance(expr, ast.Ref):
                        t = self._ref_type(expr)
                        if t is not None and t.kind not in types.VALUE_KINDS:
                            self.error(expr.pos, f"'{expr}' is a {t.kind}, not a value")
                        bi.templates[name] = Template((Hole(expr.parts, 0),))
                    else:
                        self.error(expr.pos, f"'{name}' must be a string")
                    return
                try:
                    tpl = Template.parse(expr.value)
                except TemplateError as e:
                    self.error(expr.pos_at(e.offset), str(e))
                    return
                bi.templates[name] = tpl
                for h in tpl.holes():
                    self._ref_type(ast.Ref(h.parts, self._hole_pos(expr, h)))
            case "sql" | "function":
                if not isinstance(expr, ast.Str):
                    self.error(expr.pos, f"'{name}' must be a string literal")
                elif kind == "function" and ":" not in expr.value:
                    self.error(expr.pos, "py() needs 'module:function'")
            case "method":
                if not (isinstance(expr, ast.Str) and expr.value.upper() in HTTP_METHODS):
                    self.error(expr.pos, f"HTTP method must be one of {', '.join(HTTP_METHODS)}")
            case "int" | "float" | "bool":
                t = self._expr_type(expr)
                if t is not None and not types.assignable(t, types.SCALARS[kind]):
                    self.error(expr.pos, f"'{name}' must be {kind}, got {t}")
                if kind == "int" and isinstance(expr, ast.Num) and expr.value < 0:
                    self.error(expr.pos, f"'{name}' must not be negative")
            case _:
                self._expr_type(expr)
                self._no_handles(expr, "a {} cannot be passed as a value")

    def _check_tool_options(self, bi: BindingInfo) -> None:
        """A literal timeout is positive; an http() URL keeps scheme, host and port literal; redirect policy."""
        timeout = bi.args.get("timeout")
        if bi.op != "llm" and isinstance(timeout, ast.Num) and timeout.value <= 0:
            self.error(timeout.pos, "'timeout' must be a positive number of seconds")
        if bi.op != "http":
            return
        url, expr = bi.templates.get("url"), bi.args.get("url")
        hole = origin_hole(url) if url is not None else None
        if hole is not None and expr is not None:  # bi.templates["url"] is set from bi.args["url"]
            self.error(self._hole_pos(expr, hole) if isinstance(expr, ast.Str) else expr.pos, ORIGIN_LITERAL)
        policy = bi.args.get("follow_redirects")
        if policy is not None and not (
            isinstance(policy, ast.Str) and policy.value in types.REDIRECT_POLICIES
        ):
            self.error(
                policy.pos,
                "follow_redirects must be one of " + ", ".join(f'"{p}"' for p in types.REDIRECT_POLICIES),
            )

    def _no_handles(self, expr: ast.Expr, message: str) -> bool:
        """Report models and databases used where a value is expected; True if there were none."""
        ok = True
        for r in ast.refs_in(expr):
            kind = self.scope.get(r.name, ("",))[0]
            if kind in ("model", "database"):
                self.error(r.pos, message.format("model" if kind == "model" else "db"))
                ok = False
        return ok

    def _sql_facts(self, bi: BindingInfo) -> None:
        """Parse the query (first pass, so references in any order see the output type) and type the result:
        a read is a table of its columns, a write the record {rowcount, rows} of its RETURNING rows."""
        q = bi.args.get("query")
        if not isinstance(q, ast.Str):
            return
        try:
            stmt = sql.parse(q.value)  # exactly one statement, as the SQL tools run it
            write = sql.is_write(stmt)
        except sql.SqlParseError as e:
            pos = q.pos if e.line is None else q.pos_at(_sql_index(q.value, e.line, e.col or 1))
            self.error(
                pos, e.message if e.message == sql.ONE_STATEMENT else f"SQL does not parse: {e.message}"
            )
            return
        cols = sql.returning_columns(stmt) if write else sql.output_columns(stmt)
        bi.sql, bi.sql_write = [stmt], write
        fields = bi.out.fields  # a declared `-> {...}` schema wins over the columns
        if fields is None and cols is not None:
            fields = tuple((c, types.JSON) for c in cols)
        if write:
            bi.out = types.write_result(fields)
        elif fields:
            bi.out = Type("table", fields)

    def _check_sql(self, bi: BindingInfo) -> None:
        q = bi.args.get("query")
        if bi.sql is None or not isinstance(q, ast.Str):
            return
        names = sql.placeholders(bi.sql[0])
        bound = {k: v for k, v in bi.args.items() if k not in OPS["sql"].keywords}
        for n in names:
            if n not in bound:
                m = re.search(rf"(?<![:\w]):{re.escape(n)}\b", q.value)
                self.error(
                    q.pos_at(m.start()) if m else q.pos,
                    f"SQL parameter ':{n}' is not bound (add {n} = ... to the call)",
                )
        for k, v in bound.items():
            if k not in names:
                self.error(v.pos, f"'{k}' is bound but the SQL never uses ':{k}'")
            shape = _not_bindable(v, self._expr_type(v))
            if shape:
                self.error(v.pos, f"SQL parameter ':{k}' takes a scalar or a list of scalars, not a {shape}")

    def _check_workflow_call(self, bi: BindingInfo) -> None:
        callee = self.program.workflows[bi.binding.call.func]
        params = {p.name: p for p in callee.params}
        for a in bi.binding.call.args:
            if a.name is None:
                self.error(a.pos, f"call workflow '{callee.name}' with named arguments")
            elif a.name not in params:
                self.error(a.pos, f"workflow '{callee.name}' has no parameter '{a.name}'")
            elif self._no_handles(a.value, "a {} cannot be passed as a value"):
                t = self._expr_type(a.value)
                want = types.from_ref(params[a.name].type) or types.JSON
                if t is not None and not types.assignable(t, want):
                    self.error(a.value.pos, f"'{a.name}' expects {want}, got {t}")
        for name, p in params.items():
            if p.default is None and name not in bi.args:
                self.error(bi.binding.call.pos, f"workflow '{callee.name}' needs argument '{name}'")
        bi.deps = sorted(
            {
                r.name
                for e in bi.args.values()
                for r in ast.refs_in(e)
                if self.scope.get(r.name, ("",))[0] == "binding"
            }
        )

    # -- references and types --------------------------------------------------------------------------

    def _expr_type(self, expr: ast.Expr) -> Type | None:
        if isinstance(expr, ast.Ref):
            return self._ref_type(expr)
        for r in ast.refs_in(expr):
            self._ref_type(r)
        return _literal_type(expr)

    def _ref_type(self, ref: ast.Ref) -> Type | None:
        """Type of a reference, reporting undefined names and unknown fields; None when unknown."""
        what = self.scope.get(ref.name)
        if what is None:
            self.error(ref.pos, f"undefined name '{ref.name}'")
            return None
        self.used.add(ref.name)
        kind = what[0]
        if kind == "model":
            t = types.MODEL
        elif kind == "database":
            t = types.DB
        elif kind == "parameter":
            t = self.param_types.get(ref.name, types.JSON)
        else:
            bi = self.info.bindings.get(ref.name)
            t = bi.out if bi else types.JSON
        write = kind == "binding" and bi is not None and bi.sql_write
        path = ref.name
        for part in ref.parts[1:]:
            if t.kind in ("json",) or (t.kind == "table" and t.fields is None):
                return types.JSON
            if t.kind in ("struct", "table"):
                ft = t.field(part)
                if ft is None:
                    known = ", ".join(n for n, _ in t.fields or ()) or "none"
                    hint = (
                        (
                            f"; a write's value is {{rowcount, rows}}, its RETURNING columns are in "
                            f"{path}.rows (use {path}.rows.{part})"
                        )
                        if write and path == ref.name
                        else ""
                    )
                    self.error(ref.pos, f"'{path}' has no field '{part}' (fields: {known}){hint}")
                    return None
                t, path = ft, f"{path}.{part}"
                continue
            self.error(ref.pos, f"'{path}' is {t} and has no fields")
            return None
        return t

    def _hole_pos(self, s: ast.Str, hole: Hole) -> Pos:
        """Where the name inside `{name.field}` stands in the source."""
        at = hole.offset + 1
        while at < len(s.value) and s.value[at].isspace():
            at += 1
        return s.pos_at(at)

    # -- whole-workflow checks -------------------------------------------------------------------------

    def _order(self) -> None:
        g = nx.DiGraph()
        for name, bi in self.info.bindings.items():
            g.add_node(name)
            for d in bi.deps:
                if d in self.info.bindings:
                    g.add_edge(d, name)
        try:
            self.info.order = list(nx.lexicographical_topological_sort(g, key=self.index.__getitem__))
        except nx.NetworkXUnfeasible:
            cycle = [u for u, _ in nx.find_cycle(g)]
            first = self.info.bindings[cycle[0]].binding
            self.error(first.pos, "cycle between bindings: " + " -> ".join([*cycle, cycle[0]]))
            self.info.order = [b.name for b in self.wf.bindings if b.name in self.info.bindings]

    def _returns(self) -> None:
        fields, seen = [], set()
        if not self.wf.has_return:
            self.error(self.wf.pos, f"workflow '{self.wf.name}' has no return statement")
        for item in self.wf.returns:
            if not item.key:
                self.error(item.pos, "name a returned constant: return key = value")
                continue
            if item.key in seen:
                self.error(item.pos, f"'{item.key}' is returned twice")
            seen.add(item.key)
            t = self._expr_type(item.value)
            if not self._no_handles(item.value, "cannot return a {}"):
                t = None
            fields.append((item.key, t or types.JSON))
        self.info.return_type = types.struct(fields)

    def _unused(self) -> None:
        for name, bi in self.info.bindings.items():
            if name not in self.used and not has_side_effect(bi):
                self.warn(bi.binding.pos, f"'{name}' is never used")
        decls: list[ast.ModelDecl | ast.DbDecl] = [*self.wf.models, *self.wf.dbs]
        for decl in decls:
            if decl.name not in self.used:
                self.warn(decl.pos, f"'{decl.name}' is declared but never used")


def has_side_effect(bi: BindingInfo) -> bool:
    """Writes, unsafe HTTP methods and impure Python calls change the world (the registry's rule,
    `OpSig.side_effect`); they always run and never merge. Workflow calls are judged by their operators."""
    sig = types.OPS.get(bi.op)
    return sig is not None and sig.side_effect(bi.args, bi.sql_write)


def _not_bindable(expr: ast.Expr, t: Type | None) -> str | None:
    """'record', 'table' or 'list of records' for a value one SQL parameter cannot take, else None
    (a scalar binds as itself, a list of scalars as an array)."""
    if isinstance(expr, ast.DictExpr) or (t is not None and t.kind == "struct"):
        return "record"
    if t is not None and t.kind == "table":
        return "table"
    if isinstance(expr, ast.ListExpr) and any(isinstance(i, ast.DictExpr) for i in expr.items):
        return "list of records"
    if t is not None and t.kind == "list" and t.elem is not None and t.elem.kind in ("struct", "table"):
        return "list of records"
    return None


def _literal_type(expr: ast.Expr) -> Type:
    match expr:
        case ast.Str():
            return types.TEXT
        case ast.Bool():
            return types.BOOL
        case ast.Num(value=v):
            return types.INT if isinstance(v, int) else types.FLOAT
        case ast.ListExpr(items=items) if items and not any(isinstance(i, ast.Ref | ast.Null) for i in items):
            kinds = {_literal_type(i) for i in items}
            if len(kinds) == 1:
                return Type("list", elem=kinds.pop())
            if kinds == {types.INT, types.FLOAT}:
                return Type("list", elem=types.FLOAT)
        case ast.ListExpr(items=()):
            return Type("list", elem=types.JSON)
    return types.JSON


def _show(expr: ast.Expr) -> str:
    return str(expr) if isinstance(expr, ast.Ref) else getattr(expr, "value", "?")


def _sql_index(text: str, line: int, col: int) -> int:
    """Index in `text` of the start of the token at `line`/`col` (1-based, from SqlParseError)."""
    lines = text.split("\n")
    line = min(max(line, 1), len(lines))
    index = sum(len(x) + 1 for x in lines[: line - 1]) + min(max(col, 1), len(lines[line - 1]) + 1) - 1
    index = min(index, len(text))
    while index > 0 and _is_word(text, index - 1) and _is_word(text, index):
        index -= 1
    return index


def _is_word(text: str, i: int) -> bool:
    return 0 <= i < len(text) and (text[i].isalnum() or text[i] == "_")
