"""EXPLAIN: a plan report as a dict (the JSON schema), rendered as a PostgreSQL-style tree or Graphviz.

The report is built in stages: `logical_report` describes the plan and batch; consolidation, costing,
placement and EXPLAIN ANALYZE add their own keys (see docs/plan-schema.md). Renderers show whatever
keys are present, so each stage extends the same picture.
"""

from __future__ import annotations

import json
from typing import Any

from halo import ast
from halo.batch import Batch
from halo.plan import LogicalPlan, OpNode
from halo.types import OPS

SCHEMA_VERSION = 1


def logical_report(plan: LogicalPlan, batch: Batch | None = None) -> dict[str, Any]:
    n = len(batch) if batch is not None else None
    report: dict[str, Any] = {
        "halo_plan": SCHEMA_VERSION,
        "workflow": plan.name,
        "file": plan.workflow.pos.file,
        "params": [{"name": p.name, "type": str(p.type)} for p in plan.params],
        "batch": None
        if batch is None
        else {
            "inputs": n,
            "rejected": len(batch.errors),
            "errors": [{"row": e.row, "reason": e.reason} for e in batch.errors[:20]],
        },
        "nodes": [_node(op, plan, n) for op in plan.nodes()],
        "returns": [
            {"key": k, "expr": _expr(e), "refs": sorted({r.parts[0] for r in ast.refs_in(e)})}
            for k, e in plan.returns
        ],
        "rewrites": [],
    }
    return report


def _node(op: OpNode, plan: LogicalPlan, n: int | None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": op.id,
        "kind": op.kind,
        "pos": str(op.pos),
        "deps": list(plan.graph.predecessors(op.id)),
        "after": [
            {"id": p, "reason": e["reason"]} for p, e in plan.graph.pred[op.id].items() if e.get("order")
        ],
        "instances": n,
        "side_effect": op.side_effect,
    }
    if op.kind == "llm":
        d.update(
            model=op.model,
            model_name=op.model_name,
            max_tokens=op.option("max_tokens"),
            temperature=op.option("temperature"),
            seed=op.option("seed"),
            output="text" if op.out.kind == "text" else [f for f, _ in op.out.fields or ()],
        )
        d["inputs"] = sorted({".".join(h.parts) for t in op.templates.values() for h in t.holes()})
    elif op.kind == "sql":
        d.update(
            db=op.db.name if op.db else None,
            db_kind=op.db.kind if op.db else None,
            db_target=op.db.target if op.db and op.db.kind == "duckdb" else None,
            access="write" if op.sql_write else "read",
            query=" ".join(str(op.option("query", "")).split()),
            params={k: _expr(v) for k, v in op.bound_args().items()},
        )
    elif op.kind == "http":
        d.update(
            method=str(op.option("method")).upper(),
            url="".join(
                p if isinstance(p, str) else "{" + ".".join(p.parts) + "}" for p in op.templates["url"].pieces
            )
            if "url" in op.templates
            else None,
        )
    elif op.kind == "py":
        d.update(
            function=op.option("function"),
            pure=op.option("pure") is True,
            args={k: _expr(v) for k, v in op.bound_args().items()},
        )
    return d


def _expr(e: ast.Expr) -> str:
    if isinstance(e, ast.Ref):
        return str(e)
    try:
        return json.dumps(ast.literal_value(e))
    except ValueError:
        return "{" + ", ".join(f"{k}: {_expr(v)}" for k, v in getattr(e, "items", ())) + "}"


# -- text -------------------------------------------------------------------------------------------------


def render_text(report: dict[str, Any]) -> str:
    nodes = {n["id"]: n for n in report["nodes"]}
    lines = [_header(report)]
    shown: set[str] = set()
    roots = _roots(report)
    lines.append(f"Return ({', '.join(r['key'] + ' = ' + r['expr'] for r in report['returns'])})")
    for root in roots:
        _tree(nodes, root, 1, lines, shown)
    for title, wanted in (("Side effects (not returned)", True), ("Not returned (never used)", False)):
        rest = [n for n in report["nodes"] if n["id"] not in shown and bool(n.get("side_effect")) == wanted]
        if rest:
            lines.append(title)
        for n in rest:
            _tree(nodes, n["id"], 1, lines, shown)
    lines += _footer(report)
    return "\n".join(lines)


def _header(report: dict[str, Any]) -> str:
    head = (
        f"Workflow {report['workflow']}({', '.join(p['name'] + ': ' + p['type'] for p in report['params'])})"
    )
    b = report.get("batch")
    if b:
        head += f"  batch: {b['inputs']:,} inputs"
        if b["rejected"]:
            head += f", {b['rejected']:,} rejected"
    return head


def _roots(report: dict[str, Any]) -> list[str]:
    ids = {n["id"] for n in report["nodes"]}
    roots = []
    for r in report["returns"]:
        for head in r.get("refs") or [r["expr"].split(".")[0]]:
            if head in ids and head not in roots:
                roots.append(head)
    return roots


def _tree(nodes, node_id: str, depth: int, lines: list[str], shown: set[str]) -> None:
    n = nodes[node_id]
    pad = "  " * depth
    if node_id in shown:
        lines.append(f"{pad}->  {OPS[n['kind']].label} {node_id}  (shared, see above)")
        return
    shown.add(node_id)
    lines.append(f"{pad}->  {_title(n)}")
    for detail in _details(n):
        lines.append(f"{pad}      {detail}")
    for dep in n["deps"]:
        _tree(nodes, dep, depth + 1, lines, shown)


def _title(n: dict[str, Any]) -> str:
    kind = OPS[n["kind"]].label
    parts = [f"{kind} {n['id']}"]
    if n["kind"] == "llm":
        parts.append(f"model={n['model_name']} ({n['model']})")
    elif n["kind"] == "sql":
        parts.append(f"db={n['db']} ({n['db_kind']}) {n['access']}")
    elif n["kind"] == "http":
        parts.append(f"{n['method']} {n['url']}")
    elif n["kind"] == "py":
        parts.append(f"{n['function']} {'pure' if n['pure'] else 'impure'}")
    calls = n.get("calls")
    if n.get("instances") is not None:
        inst = f"instances={n['instances']:,}"
        if calls is not None:
            inst += f" calls={calls:,}"
        parts.append(f"({inst})")
    cost = n.get("estimate")
    if cost:
        parts.append(f"(est {cost['seconds']:.2f} s)")
    actual = n.get("actual")
    if actual:
        parts.append(f"(actual {actual['seconds']:.2f} s)")
    return "  ".join(parts)


def _details(n: dict[str, Any]) -> list[str]:
    out = []
    if n["kind"] == "llm":
        out.append(
            f"max_tokens={n['max_tokens']} temperature={n['temperature']}"
            + (f" seed={n['seed']}" if n.get("seed") is not None else "")
            + f"  output: {n['output'] if isinstance(n['output'], str) else '{' + ', '.join(n['output']) + '}'}"
        )
        if n.get("inputs"):
            out.append("reads: " + ", ".join(n["inputs"]))
    elif n["kind"] == "sql":
        q = n["query"]
        out.append("query: " + (q if len(q) <= 100 else q[:97] + "..."))
        if n["params"]:
            out.append("params: " + ", ".join(f":{k} = {v}" for k, v in n["params"].items()))
    elif n["kind"] == "py" and n["args"]:
        out.append("args: " + ", ".join(f"{k} = {v}" for k, v in n["args"].items()))
    if n.get("side_effect"):
        out.append("side effect: runs once per input, never merged, in declared order")
    if n.get("after"):
        out.append("after: " + ", ".join(f"{a['id']} ({a['reason']})" for a in n["after"]))
    for key in ("merge", "prefix", "estimate", "placement", "actual"):
        if n.get(key) and isinstance(n[key], dict) and n[key].get("text"):
            out.append(n[key]["text"])
    return out


def _footer(report: dict[str, Any]) -> list[str]:
    out = []
    for r in report.get("rewrites", []):
        out.append(f"Rewrite: {r}")
    for key in (
        "totals",
        "batching",
        "execution",
        "hardware",
        "optimizer",
        "simulation",
        "calibration",
        "analyze",
        "gantt",
    ):
        block = report.get(key)
        if block and block.get("text"):
            out.append(block["text"])
    b = report.get("batch")
    if b and b["errors"]:
        out.append("Rejected rows:")
        out += [f"  row {e['row']}: {e['reason']}" for e in b["errors"]]
        if b["rejected"] > len(b["errors"]):
            out.append(f"  ... and {b['rejected'] - len(b['errors']):,} more")
    return out


# -- graphviz -------------------------------------------------------------------------------------------


def render_dot(report: dict[str, Any]) -> str:
    shapes = {"llm": "box", "sql": "cylinder", "http": "component", "py": "ellipse"}
    lines = [f'digraph "{report["workflow"]}" {{', "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for n in report["nodes"]:
        label = _title(n).replace('"', "'")
        style = ', style=filled, fillcolor="#fde2e2"' if n.get("side_effect") else ""
        lines.append(f'  "{n["id"]}" [shape={shapes[n["kind"]]}, label="{label}"{style}];')
    for n in report["nodes"]:
        after = {a["id"]: a["reason"] for a in n.get("after", ())}
        for d in n["deps"]:
            style = f' [style=dashed, label="{after[d]}"]' if d in after else ""
            lines.append(f'  "{d}" -> "{n["id"]}"{style};')
    lines.append('  "return" [shape=doublecircle, label="return"];')
    for root in _roots(report):
        lines.append(f'  "{root}" -> "return";')
    lines.append("}")
    return "\n".join(lines)
