"""Which LLM nodes ask the engine to keep their KV for a follow-up call of the same input."""

from __future__ import annotations

from halo.plan import LogicalPlan, OpNode
from halo.template import Template
from halo.types import json_schema


def kv_retention(plan: LogicalPlan, ttl_s: float | None) -> dict[str, float]:
    """LLM nodes whose KV the engine should keep for ``ttl_s`` seconds after the call (Continuum's TTL).

    The rule: LLM node A retains when some LLM node B (for the same input) satisfies all of
      1. B runs on A's model;
      2. B is reachable from A through tool nodes only (sql/http/py; a direct edge counts), so B is issued
         after A finishes, with at most tool calls in between;
      3. B's conversation starts with A's: equal system templates (or both absent), equal JSON schemas
         (a schema extends the system message), and B's prompt template begins with A's: every piece of
         A's template but the last is the same piece of B's, and A's last piece is the same hole or a
         text that B's next piece starts with (e.g. A = "User: {q}\nAssistant:", B = "User: {q}\nAssistant:
         {a}\nUser: ...").
    Then B's tokens begin with A's system + prompt, and the engine serves them from A's retained KV.
    A B whose prompt merely starts with the hole ``{a}`` does not qualify: chat formatting puts A's reply
    after A's prompt and the assistant header, so B could share only the system prompt with A, which
    ``prefix_key`` reuse already serves without holding a per-input KV.
    Returns {node id: ttl_s}; empty when ``ttl_s`` is None or <= 0.
    """
    if not ttl_s or ttl_s <= 0:
        return {}
    graph = plan.graph
    ops = {n: graph.nodes[n]["op"] for n in graph}
    out: dict[str, float] = {}
    for a, op_a in ops.items():
        if op_a.kind != "llm" or "prompt" not in op_a.templates:
            continue
        seen, stack = {a}, list(graph.successors(a))
        while stack:
            b = stack.pop()
            if b in seen:
                continue
            seen.add(b)
            op_b = ops[b]
            if op_b.kind != "llm":
                stack.extend(graph.successors(b))
            elif _continues(op_a, op_b):
                out[a] = float(ttl_s)
                break
    return out


def _continues(a: OpNode, b: OpNode) -> bool:
    """Rules 1 and 3 of `kv_retention`: same model, same system and schema, B's prompt starts with A's."""
    if a.model != b.model or _pieces(a.templates.get("system")) != _pieces(b.templates.get("system")):
        return False
    if json_schema(a.out) != json_schema(b.out) or "prompt" not in b.templates:
        return False
    pa, pb = _template_pieces(a.templates["prompt"]), _template_pieces(b.templates["prompt"])
    n = len(pa)
    if n == 0 or len(pb) < n or pa[: n - 1] != pb[: n - 1]:
        return False
    if isinstance(pa[-1], str):
        return isinstance(pb[n - 1], str) and pb[n - 1].startswith(pa[-1])
    return pa[-1] == pb[n - 1]


def _pieces(t: Template | None) -> tuple | None:
    """A template's pieces with holes reduced to what they render (their position is irrelevant)."""
    if t is None:
        return None
    return _template_pieces(t)


def _template_pieces(t: Template) -> tuple:
    return tuple(p if isinstance(p, str) else (p.parts, p.as_json) for p in t.pieces)
