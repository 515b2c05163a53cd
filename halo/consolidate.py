"""Consolidation: instantiate a plan over a batch and merge identical operator calls, as visible rewrites.

`call_key` is the identity of one call instance; the runtime uses the same function to coalesce calls,
so it is pure and cheap. `consolidate` groups the batch's instances of every node into distinct calls:
exactly when a node's inputs are known at plan time (parameters and constants only), as an estimate
(an upper bound on the calls, `estimated=True`) when they depend on upstream operator outputs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from halo import ast, sql
from halo import urls as url
from halo.batch import Batch
from halo.calibration import Calibration
from halo.plan import LogicalPlan, OpNode, evaluate
from halo.prefix import PrefixPlan, prefix_groups, prefix_key
from halo.template import Hole, Template, format_value, lookup
from halo.tokens import counter
from halo.types import OPS, SAFE_METHODS, json_schema

_SCALARS = {str, int, float, bool, type(None)}
_LLM_TEMPLATES = ("system", "prompt")


def canonical(value: Any) -> str:
    """Canonical JSON of a value (sorted keys, compact): equal values give equal text. Values JSON lacks
    (dates, decimals) are tagged with their type, so a date never equals the string of its text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_tagged)


def _tagged(value: Any) -> dict[str, str]:
    return {f"${type(value).__name__}": str(value)}


# -- call identity ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """What `call_key` needs of one operator, computed once: its constant identity and, for LLMs, the
    templates and other arguments that vary per input."""

    const: str | None  # None: this operator never merges
    never: str | None  # why it never merges
    templates: tuple[tuple[str, Template], ...] = ()
    exprs: tuple[tuple[str, ast.Expr], ...] = ()


_SPECS: dict[int, tuple[OpNode, _Spec]] = {}  # by id(op); the op is kept so its id is not reused
_SPECS_MAX = 4096


def _spec(op: OpNode) -> _Spec:
    hit = _SPECS.get(id(op))
    if hit is not None and hit[0] is op:
        return hit[1]
    spec = _make_spec(op)
    if len(_SPECS) >= _SPECS_MAX:
        _SPECS.clear()
    _SPECS[id(op)] = (op, spec)
    return spec


def _make_spec(op: OpNode) -> _Spec:
    never = never_merges(op)
    if never:
        return _Spec(None, never)
    if op.kind == "llm":
        templates = tuple((n, op.templates.get(n, Template(()))) for n in _LLM_TEMPLATES)
        exprs = tuple(sorted((k, v) for k, v in op.args.items() if k not in _LLM_TEMPLATES))
        const = canonical(["llm", op.model, json_schema(op.out), repr(op.out)])
        return _Spec(const, None, templates, exprs)
    if op.kind == "sql":
        const = canonical(["sql", [op.db.kind, op.db.target] if op.db else None, normalized_sql(op)])
    elif op.kind == "http":
        const = canonical(["http", op.option("follow_redirects")])
    else:
        const = canonical(["py", op.option("function")])
    return _Spec(const, None)


def never_merges(op: OpNode) -> str | None:
    """Why calls of this operator must never merge (from its constant arguments), or None."""
    if op.side_effect:
        return "side effect: runs once per input, in declared order"
    if op.kind == "sql":
        stmts = op.sql or []
        if len(stmts) != 1 or sql.is_write(stmts[0]):
            return "not a single read-only query"
        if op.reads_written_db:
            return "reads a database this workflow writes: each input may see its own writes"
    if op.kind == "http" and str(op.option("method")).upper() not in SAFE_METHODS:
        return f"HTTP {str(op.option('method')).upper()} is not a safe method"
    if op.kind == "py" and op.option("pure") is not True:
        return "impure Python function"
    if op.kind == "llm" and isinstance(op.args.get("temperature"), ast.Num) and "seed" not in op.args:
        if float(op.option("temperature")) > 0:
            return f"sampling at temperature {op.option('temperature')} without a seed"
    return None


def normalized_sql(op: OpNode) -> str:
    """The node's SQL in canonical form (computed once per node, never per row)."""
    assert op.sql is not None, f"{op.id} is not a checked sql node"
    return sql.normalize(op.sql[0])


def tool_args(op: OpNode, env: dict[str, Any]) -> dict[str, Any]:
    """What one sql/py/http call sends for one input, exactly as the toolbox sends it: the SQL parameter
    values, the Python keyword arguments, or the HTTP method, encoded URL (query appended), headers and body."""
    if op.kind != "http":
        return {k: evaluate(v, env) for k, v in op.bound_args().items()}
    value = {k: evaluate(op.args[k], env) if k in op.args else None for k in ("query", "headers", "body")}
    link = url.with_query(url.render(op.templates["url"], env), value.pop("query"))
    return {"method": str(op.option("method")).upper(), "url": link, **value}


def call_parts(op: OpNode, env: dict[str, Any]) -> list[str] | None:
    """The identity of one call as strings: constant part (operator, model or database, statement, output
    schema, redirect policy), then what goes to the engine or the tool. Timeouts and retries are left out:
    they decide whether a call fails, not what it returns."""
    spec = _spec(op)
    if spec.const is None:
        return None
    if op.kind != "llm":
        return [spec.const, canonical(tool_args(op, env))]
    values = _llm_settings({k: evaluate(e, env) for k, e in spec.exprs})
    if float(values.get("temperature") or 0.0) > 0 and values.get("seed") is None:
        return None
    return [spec.const, *(t.render(env) for _, t in spec.templates), canonical(values)]


_LLM = OPS["llm"]


def _llm_settings(given: dict[str, Any]) -> dict[str, Any]:
    """An LLM call's settings as they resolve: registry defaults for those left out, whole-number floats
    as floats (`max_tokens = 256` and `temperature = 0` are the call that leaves them out)."""
    values = {**_LLM.defaults, **given}
    return {
        k: float(v) if _LLM.keywords.get(k) == "float" and type(v) is int else v for k, v in values.items()
    }


def call_key(op: OpNode, env: dict[str, Any]) -> str | None:
    """The identity of one call instance given an input's environment, or None if it must never merge."""
    parts = call_parts(op, env)
    if parts is None:
        return None
    return hashlib.blake2b(canonical(parts).encode(), digest_size=16).hexdigest()


# -- consolidation over a batch --------------------------------------------------------------------------


@dataclass
class OpGroup:
    """All instances of one node over the batch, and the distinct calls they consolidate into.

    `row_call[i]` is the call (exact) or class (estimated) of input i; `call_rows[c]` a representative
    input of call c. For LLM groups, `texts[c]` is the plan-time-known prompt text of call c (system and
    prompt; upstream outputs left out), `leads[c]` its part before the first upstream output (a prefix of
    the real prompt), `upstream_holes` the upstream nodes whose outputs fill the prompt, and `prefix_key`
    the `halo.prefix.prefix_key` every call's request carries, when they all carry the same one and it names
    some text (a system prompt or a static prompt prefix).
    """

    id: str
    op: OpNode
    instances: int
    calls: int
    estimated: bool
    merge: str
    row_call: list[int]
    call_rows: list[int]
    texts: list[str] = field(default_factory=list)
    leads: list[str] = field(default_factory=list)
    upstream_holes: list[str] = field(default_factory=list)
    prefix: PrefixPlan | None = None
    prefix_key: str | None = None  # LLM: the engine prefix all calls share (None: differ, or no text)

    @property
    def kind(self) -> str:
        return self.op.kind


@dataclass
class ConsolidatedPlan:
    """Operator groups as a DAG (`graph` nodes carry `group`), and the rewrites applied, as text."""

    plan: LogicalPlan
    graph: nx.DiGraph
    groups: dict[str, OpGroup]
    rewrites: list[str]
    inputs: int


def consolidate(
    plan: LogicalPlan,
    batch: Batch | list[dict[str, Any]],
    calibration: Calibration | None = None,
    merge: bool = True,
) -> ConsolidatedPlan:
    """Group every node's instances over the batch into distinct calls (each instance its own call
    without `merge`: the rule switched off), and find shared prompt prefixes."""
    rows = [r for _, r in batch.rows] if isinstance(batch, Batch) else list(batch)
    graph = nx.DiGraph()
    groups: dict[str, OpGroup] = {}
    rewrites: list[str] = []
    for op in plan.nodes():
        g = _group(plan, op, rows, groups, merge)
        groups[op.id] = g
        graph.add_node(op.id, group=g)
        graph.add_edges_from((d, op.id) for d in plan.graph.predecessors(op.id))
        if op.kind == "llm" and g.calls:
            g.prefix = prefix_groups(g.leads, counter(op.model, calibration))
            g.prefix_key = _shared_prefix_key(op, rows, g.call_rows, plan.graph)
        rewrites += _rewrites(g)
    return ConsolidatedPlan(plan, graph, groups, rewrites, len(rows))


def _group(plan: LogicalPlan, op: OpNode, rows: list[dict], done: dict[str, OpGroup], merge: bool) -> OpGroup:
    n = len(rows)
    heads = {r.parts[0] for e in op.args.values() for r in ast.refs_in(e)}
    heads |= {h.parts[0] for t in op.templates.values() for h in t.holes()}
    params = sorted(h for h in heads if h not in plan.graph)
    deps = [d for d in op.deps if d in done]
    proj = _project(rows, params)
    never = _spec(op).never or (None if merge else "the merge rule is disabled")
    if never:
        g = OpGroup(op.id, op, n, n, False, f"not merged: {never}", list(range(n)), list(range(n)))
        if op.kind == "llm":
            g.texts, g.leads, g.upstream_holes = _known_texts(op, rows, proj, g.call_rows, plan.graph)
        return g
    if deps:
        classes = [(p, *(done[d].row_call[i] for d in deps)) for i, p in enumerate(proj)]
        row_call, call_rows = _index(classes)
        names = ", ".join(f"`{d}`" for d in deps)
        g = OpGroup(
            op.id,
            op,
            n,
            len(call_rows),
            True,
            f"estimated ≤ {len(call_rows):,} distinct calls (inputs depend on {names}; "
            "equal upstream outputs may merge more at run time)",
            row_call,
            call_rows,
        )
        if op.kind == "llm":
            g.texts, g.leads, g.upstream_holes = _known_texts(op, rows, proj, call_rows, plan.graph)
        return g
    rep_of, reps = _index(proj)
    keyed_or_none = [call_parts(op, rows[r]) for r in reps]
    keyed = [k for k in keyed_or_none if k is not None]
    if len(keyed) < len(keyed_or_none):  # sampling made non-deterministic by a per-input argument
        g = OpGroup(
            op.id, op, n, n, False, "not merged: non-deterministic sampling", list(range(n)), list(range(n))
        )
        g.texts, g.leads, g.upstream_holes = _known_texts(op, rows, proj, g.call_rows, plan.graph)
        return g
    call_of_rep, first = _index([tuple(k) for k in keyed])
    row_call = [call_of_rep[rep_of[i]] for i in range(n)]
    call_rows = [reps[r] for r in first]
    g = OpGroup(
        op.id,
        op,
        n,
        len(call_rows),
        False,
        f"{len(call_rows):,} distinct calls ({OPS[op.kind].identity})",
        row_call,
        call_rows,
    )
    if op.kind == "llm":
        g.texts = g.leads = [_llm_text(keyed[r]) for r in first]
    return g


def _shared_prefix_key(op: OpNode, rows: list[dict], call_rows: list[int], graph: nx.DiGraph) -> str | None:
    """The prefix key of every call of `op`, when its system text renders the same for all of them (known
    at plan time: it reads no upstream output); None when the calls differ or share no text."""
    system = op.templates.get("system")
    if system is None:
        return prefix_key(op, None) if op.templates["prompt"].static_prefix() else None
    heads = {h.parts[0] for h in system.holes()}
    if heads & set(graph):
        return None
    texts = {system.render(rows[r]) for r in (call_rows if heads else call_rows[:1])}
    return prefix_key(op, texts.pop()) if len(texts) == 1 else None


def _index(items: list) -> tuple[list[int], list[int]]:
    """Dense ids of equal items, and the first position of each id."""
    ids: dict[Any, int] = {}
    out: list[int] = []
    first: list[int] = []
    for i, item in enumerate(items):
        k = ids.get(item)
        if k is None:
            k = ids[item] = len(first)
            first.append(i)
        out.append(k)
    return out, first


def _project(rows: list[dict], params: list[str]) -> list[tuple]:
    """Per row, the hashable values of the parameters a node reads."""
    cols = []
    for p in params:
        col = [r.get(p) for r in rows]
        if not {type(v) for v in col} <= _SCALARS:
            col = [v if type(v) in _SCALARS else canonical(v) for v in col]
        cols.append(col)
    return list(zip(*cols, strict=True)) if cols else [()] * len(rows)


def _llm_text(parts: list[str]) -> str:
    system, prompt = parts[1], parts[2]
    return f"{system}\n{prompt}" if system else prompt


def _known_texts(
    op: OpNode, rows: list[dict], proj: list[tuple], reps: list[int], graph: nx.DiGraph
) -> tuple[list[str], list[str], list[str]]:
    """Per call: the prompt text known at plan time (upstream holes left out) and its lead (the text
    before the first upstream hole, a true prefix of the prompt); and the upstream nodes filling holes."""
    pieces = [p for n in ("system", "prompt") for p in (*op.templates.get(n, Template(())).pieces, "\n")][:-1]
    holes = [p.parts[0] for p in pieces if isinstance(p, Hole) and p.parts[0] in graph]
    cut = next((i for i, p in enumerate(pieces) if isinstance(p, Hole) and p.parts[0] in graph), len(pieces))
    seen: dict[tuple, tuple[str, str]] = {}
    texts, leads = [], []
    for r in reps:
        hit = seen.get(proj[r])
        if hit is None:
            env = rows[r]
            out = [
                p if isinstance(p, str) else "" if p.parts[0] in graph else format_value(lookup(env, p.parts))
                for p in pieces
            ]
            hit = seen[proj[r]] = ("".join(out).strip("\n"), "".join(out[:cut]).lstrip("\n"))
        texts.append(hit[0])
        leads.append(hit[1])
    return texts, leads, holes


def _rewrites(g: OpGroup) -> list[str]:
    out = []
    what = f"{OPS[g.kind].label} calls of `{g.id}`"
    if g.instances and g.calls < g.instances:
        if g.estimated:
            out.append(
                f"merge {g.instances:,} {what} into ≤ {g.calls:,} (estimated: identical inputs and "
                "identical upstream calls)"
            )
        else:
            out.append(f"merged {g.instances:,} {what} into {g.calls:,} ({OPS[g.kind].identity})")
    if g.prefix and g.prefix.saved_tokens:
        out.append(f"prefix sharing in `{g.id}`: {g.prefix.text}")
    return out
