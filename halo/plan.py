"""Logical plans: a checked workflow becomes a DAG of operator nodes (networkx), workflow calls inlined."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx

from halo import ast, urls
from halo.check import BindingInfo, CheckResult, WorkflowInfo, has_side_effect
from halo.errors import HaloError, Pos
from halo.template import Hole, Template, format_value, lookup
from halo.types import OPS, Type

MAX_OPERATORS = 10_000  # operators in one plan, after workflow calls are inlined
_REGISTRY: Any = object()  # OpNode.option's default: the operator kind's registry default


@dataclass
class OpNode:
    """One operator of the plan: an llm/sql/http/py call with its arguments resolved to plan names."""

    id: str
    kind: str
    pos: Pos
    args: dict[str, ast.Expr]
    templates: dict[str, Template]
    out: Type
    model: str | None = None  # model id, e.g. "Qwen/Qwen3-14B"
    model_name: str | None = None  # the name the workflow gave it
    db: ast.DbDecl | None = None
    sql: list | None = None
    sql_write: bool = False
    side_effect: bool = False
    reads_written_db: bool = False  # a read of a database the plan also writes (never merged across inputs)
    deps: list[str] = field(default_factory=list)

    def option(self, name: str, default: Any = _REGISTRY) -> Any:
        """A constant argument's value (max_tokens, temperature, method, ...); when the workflow does not give
        it as a constant, `default`, else the operator kind's registry default (`OPS[kind].defaults`)."""
        if default is _REGISTRY:
            return OPS[self.kind].option(self.args, name)
        expr = self.args.get(name)
        if expr is None:
            return default
        try:
            return ast.literal_value(expr)
        except ValueError:
            return default

    def llm_model(self) -> str:
        """The model id of an llm node: check makes every llm() call name a declared model."""
        if self.model is None:
            raise ValueError(f"operator '{self.id}' ({self.kind}) has no model")
        return self.model

    def bound_args(self) -> dict[str, ast.Expr]:
        """SQL parameters or py keyword arguments: the keywords that are not the operator's own."""
        sig = OPS[self.kind]
        own = sig.keywords if sig.extra_keywords else ()
        return {k: v for k, v in self.args.items() if k not in own}


@dataclass
class LogicalPlan:
    workflow: ast.Workflow
    graph: nx.DiGraph
    returns: list[tuple[str, ast.Expr]]

    @property
    def name(self) -> str:
        return self.workflow.name

    @property
    def params(self) -> list[ast.Param]:
        return self.workflow.params

    def node(self, node_id: str) -> OpNode:
        return self.graph.nodes[node_id]["op"]

    def nodes(self) -> list[OpNode]:
        """Operators in a stable topological order."""
        order = {n: i for i, n in enumerate(self.graph.graph.get("declared", []))}
        return [
            self.node(n)
            for n in nx.lexicographical_topological_sort(self.graph, key=lambda n: order.get(n, 0))
        ]

    def evaluate_returns(self, env: dict[str, Any]) -> dict[str, Any]:
        return {k: evaluate(e, env) for k, e in self.returns}


def build(checked: CheckResult, workflow: str | None = None) -> LogicalPlan:
    """Build the plan of one workflow (the main file's, by default); raises HaloError if checks failed."""
    checked.raise_on_error()
    wf = checked.program.workflow(workflow)
    builder = _Builder(checked)
    scope: dict[str, ast.Expr] = {p.name: ast.Ref((p.name,), p.pos) for p in wf.params}
    returns = builder.inline(checked.workflows[wf.name], prefix="", scope=scope)
    g = builder.graph
    ordered = sorted(builder.declared, key=builder.source_key.__getitem__)  # every node has its key
    _database_order(g, ordered)
    writers = [n for n in ordered if g.nodes[n]["op"].side_effect]
    for a, b in zip(writers, writers[1:], strict=False):
        _order_edge(g, a, b, "side effects in declared order")
    g.graph["declared"] = builder.declared
    if not nx.is_directed_acyclic_graph(g):
        cycle = [a for a, _ in nx.find_cycle(g)]
        raise HaloError.at(
            wf.pos,
            "side effects are declared in an order that contradicts the data flow: "
            + " -> ".join([*cycle, cycle[0]]),
        )
    return LogicalPlan(wf, g, returns)


def _database_order(g: nx.DiGraph, ordered: list[str]) -> None:
    """Statements on one database (same kind and target) keep their declared order around every write:
    each statement runs before the next write after it, and each write before every statement up to and
    including the next write."""
    by_db: dict[tuple[str, str], list[OpNode]] = {}
    for n in ordered:
        op = g.nodes[n]["op"]
        if op.kind == "sql" and op.db is not None:
            by_db.setdefault((op.db.kind, op.db.target), []).append(op)
    for ops in by_db.values():
        written = any(op.sql_write for op in ops)
        for op in ops:
            op.reads_written_db = written and not op.sql_write
        last_write: OpNode | None = None
        since: list[OpNode] = []  # statements after the last write (or from the start)
        for op in ops:
            if op.sql_write:
                for prev in since:
                    _order_edge(g, prev.id, op.id, f"read before write on db {_db_name(prev)}")
                if last_write is not None:
                    _order_edge(g, last_write.id, op.id, f"write before write on db {_db_name(op)}")
                last_write, since = op, []
                continue
            if last_write is not None:
                _order_edge(g, last_write.id, op.id, f"write before read on db {_db_name(op)}")
            since.append(op)


def _db_name(op: OpNode) -> str:
    assert op.db is not None  # _database_order groups the statements that have a db
    return op.db.name


def _order_edge(g: nx.DiGraph, a: str, b: str, reason: str) -> None:
    """An ordering edge (no data flows along it); a data edge already there says enough."""
    if not g.has_edge(a, b):
        g.add_edge(a, b, order=True, reason=reason)


class _Builder:
    def __init__(self, checked: CheckResult):
        self.checked = checked
        self.graph = nx.DiGraph()
        self.declared: list[str] = []
        self.source_key: dict[str, tuple[int, ...]] = {}  # where a node's binding is written (nested calls)

    def inline(
        self, info: WorkflowInfo, prefix: str, scope: dict[str, ast.Expr], key: tuple[int, ...] = ()
    ) -> list[tuple[str, ast.Expr]]:
        """Add the workflow's bindings under `prefix`; `scope` maps its local names to plan expressions."""
        scope = dict(scope)
        index = {b.name: i for i, b in reversed(list(enumerate(info.workflow.bindings)))}
        models = {m.name: m for m in info.workflow.models}
        dbs = {d.name: d for d in info.workflow.dbs}
        for name in info.order:
            bi = info.bindings[name]
            if bi.op == "workflow":
                callee = self.checked.workflows[bi.binding.call.func]
                args = {
                    p.name: (p.default if p.default is not None else ast.Null(p.pos))
                    for p in callee.workflow.params
                }
                args.update({k: _rewrite(v, scope) for k, v in bi.args.items()})
                rets = self.inline(callee, f"{prefix}{name}/", args, (*key, index[name]))
                scope[name] = ast.DictExpr(tuple(rets), bi.binding.pos)
                continue
            node = self._node(bi, f"{prefix}{name}", scope, models, dbs)
            self.source_key[node.id] = (*key, index[name])
            scope[name] = ast.Ref((node.id,), bi.binding.pos)
        return [(item.key, _rewrite(item.value, scope)) for item in info.workflow.returns]

    def _node(self, bi: BindingInfo, node_id: str, scope, models, dbs) -> OpNode:
        args = {k: _rewrite(v, scope) for k, v in bi.args.items() if k not in ("model", "db")}
        templates = {
            k: _rewrite_template(t, scope, url=bi.op == "http" and k == "url")
            for k, t in bi.templates.items()
        }
        model_ref = bi.args.get("model")
        db_ref = bi.args.get("db")
        model = models.get(model_ref.name) if isinstance(model_ref, ast.Ref) else None
        if len(self.graph) >= MAX_OPERATORS:
            raise HaloError.at(
                bi.binding.pos,
                f"the plan would have more than {MAX_OPERATORS:,} operators once workflow calls are inlined",
            )
        node = OpNode(
            id=node_id,
            kind=bi.op,
            pos=bi.binding.pos,
            args=args,
            templates=templates,
            out=bi.out,
            model=model.model_id if model else None,
            model_name=model.name if model else None,
            db=dbs.get(db_ref.name) if isinstance(db_ref, ast.Ref) else None,
            sql=bi.sql,
            sql_write=bi.sql_write,
            side_effect=has_side_effect(bi),
        )
        deps = {r.parts[0] for e in args.values() for r in ast.refs_in(e)}
        deps |= {h.parts[0] for t in templates.values() for h in t.holes()}
        node.deps = sorted(d for d in deps if d in self.graph)
        self.graph.add_node(node_id, op=node)
        for d in node.deps:
            self.graph.add_edge(d, node_id)
        self.declared.append(node_id)
        return node


def _rewrite(expr: ast.Expr, scope: dict[str, ast.Expr]) -> ast.Expr:
    """Replace local names by their plan-level expressions, keeping field access."""
    match expr:
        case ast.Ref(parts=parts):
            target = scope.get(parts[0])
            if target is None:
                return expr
            return _select(target, parts[1:], expr.pos)
        case ast.ListExpr(items=items):
            return replace(expr, items=tuple(_rewrite(i, scope) for i in items))
        case ast.DictExpr(items=items):
            return replace(expr, items=tuple((k, _rewrite(v, scope)) for k, v in items))
    return expr


def _select(target: ast.Expr, rest: tuple[str, ...], pos: Pos) -> ast.Expr:
    if isinstance(target, ast.Ref):
        return ast.Ref(target.parts + rest, pos)
    if rest and isinstance(target, ast.DictExpr):
        value = dict(target.items).get(rest[0])
        if value is not None:
            return _select(value, rest[1:], pos)
    return target


def _rewrite_template(t: Template, scope: dict[str, ast.Expr], url: bool = False) -> Template:
    """`t` with local names replaced by plan names; constants are inlined as text (percent-encoded for
    their place in a URL template, as the runtime encodes values)."""
    pieces: list[str | Hole] = []
    literal = ""  # the template's own text so far: where a URL value stands
    for p in t.pieces:
        if isinstance(p, str):
            pieces.append(p)
            literal += p
            continue
        target = _rewrite(ast.Ref(p.parts, Pos("", 0, 0)), scope)
        if isinstance(target, ast.Ref):
            pieces.append(Hole(target.parts, p.offset))
        elif not ast.refs_in(target):
            text = format_value(ast.literal_value(target))
            pieces.append(urls.encode(text, literal) if url else text)
        else:  # a record (a workflow call's result) holding node outputs: spliced as JSON
            spliced = _json_pieces(target, p.offset)
            pieces.extend(urls.encode(q, literal) if url and isinstance(q, str) else q for q in spliced)
    merged: list[str | Hole] = []
    for p in pieces:
        if isinstance(p, str) and merged and isinstance(merged[-1], str):
            merged[-1] += p
        elif p != "":
            merged.append(p)
    return Template(tuple(merged))


def _json_pieces(expr: ast.Expr, offset: int) -> list[str | Hole]:
    """Template pieces that render `expr` exactly as json.dumps would render its value."""
    match expr:
        case ast.Ref(parts=parts):
            return [Hole(parts, offset, as_json=True)]
        case ast.DictExpr(items=items):
            out: list[str | Hole] = ["{"]
            for i, (k, v) in enumerate(items):
                out.append((", " if i else "") + json.dumps(k, ensure_ascii=False) + ": ")
                out.extend(_json_pieces(v, offset))
            return [*out, "}"]
        case ast.ListExpr(items=items):
            out = ["["]
            for i, v in enumerate(items):
                if i:
                    out.append(", ")
                out.extend(_json_pieces(v, offset))
            return [*out, "]"]
    return [json.dumps(ast.literal_value(expr), default=str, ensure_ascii=False)]


def evaluate(expr: ast.Expr, env: dict[str, Any]) -> Any:
    """The value of a plan expression in one input's environment (params and finished node outputs)."""
    match expr:
        case ast.Ref(parts=parts):
            return lookup(env, parts)
        case ast.ListExpr(items=items):
            return [evaluate(i, env) for i in items]
        case ast.DictExpr(items=items):
            return {k: evaluate(v, env) for k, v in items}
    return ast.literal_value(expr)
