"""Rewrite rules over the consolidated plan: each one named, each recording what it did, each switchable off.

A rule decides one part of what the runtime does with the plan. Switched off (`halo run --disable-rule`),
its part falls back to the plainest safe behaviour, so every subset of rules returns the same records:

| rule               | on                                                        | off                               |
|--------------------|-----------------------------------------------------------|-----------------------------------|
| `merge`            | identical calls run once (side effects never merge)      | every instance is its own call    |
| `prefix_grouping`  | requests carry their prefix key; batches go prefix by prefix | no prefix keys, arrival order  |
| `fusion`           | LLM nodes that decode alike share engine batches          | each node its own batches         |
| `read_write_order` | statements on one database are ordered only around writes | all database statements in declared order |
| `kv_retention`     | a call's KV is kept for the same input's follow-up call   | nothing retained                  |
| `co_residency`     | models that fit a device stay awake together, memory split | one model awake per device, the others asleep |

`merge`, `fusion` and `co_residency` also shape the plan before the optimizer (what is priced and placed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import networkx as nx

from halo.batching import fusion_sets
from halo.consolidate import ConsolidatedPlan, never_merges
from halo.kv_retention import kv_retention
from halo.plan import LogicalPlan
from halo.types import OPS

KV_TTL_S = 30.0  # how long a retained KV waits for its follow-up (Continuum's TTL)


@dataclass
class Decisions:
    """What the rules decided; `halo.execution.ExecutionPlan` carries it to the runtime."""

    merge: bool = False
    prefix_nodes: list[str] = field(default_factory=list)
    fusion_sets: list[list[str]] = field(default_factory=list)
    order_edges: list[tuple[str, str]] = field(default_factory=list)  # added ordering (no data flows)
    kv_retention: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    name: str
    summary: str
    apply: Callable[[LogicalPlan, ConsolidatedPlan | None, Decisions], list[str]]  # returns its actions
    fallback: Callable[[LogicalPlan, Decisions], list[str]] = lambda plan, d: []


@dataclass(frozen=True)
class Applied:
    """One rule's outcome: whether it ran and what it did (or what replaced it), one line per action."""

    rule: str
    enabled: bool
    actions: list[str]

    def as_dict(self) -> dict:
        return {"rule": self.rule, "enabled": self.enabled, "actions": self.actions}


def _merge(plan: LogicalPlan, cplan: ConsolidatedPlan | None, d: Decisions) -> list[str]:
    d.merge = True
    out = []
    for op in plan.nodes():
        why = never_merges(op)
        if why:
            out.append(f"{op.id}: never merged ({why})")
        elif cplan is not None and (g := cplan.groups[op.id]).calls < g.instances:
            out.append(f"{op.id}: {g.instances:,} instances -> {g.calls:,} calls")
    return out


def _prefix(plan: LogicalPlan, cplan: ConsolidatedPlan | None, d: Decisions) -> list[str]:
    out = []
    for op in plan.nodes():
        if OPS[op.kind].tool or "prompt" not in op.templates:
            continue
        d.prefix_nodes.append(op.id)
        p = cplan.groups[op.id].prefix if cplan is not None else None
        groups = f"; {len(p.groups):,} sub-groups, saves {p.saved_tokens:,} prefill tokens" if p else ""
        out.append(f"{op.id}: requests keyed by prefix, batches ordered by prefix then prompt length{groups}")
    return out


def _fusion(plan: LogicalPlan, cplan: ConsolidatedPlan | None, d: Decisions) -> list[str]:
    d.fusion_sets = fusion_sets(plan)
    return [f"fuse {', '.join(s)}: same model and decoding, ready together" for s in d.fusion_sets]


def _database_statements(plan: LogicalPlan) -> list[str]:
    declared = {n: i for i, n in enumerate(plan.graph.graph.get("declared", []))}
    return sorted((op.id for op in plan.nodes() if op.db is not None), key=lambda n: declared.get(n, 0))


def _read_write(plan: LogicalPlan, cplan: ConsolidatedPlan | None, d: Decisions) -> list[str]:
    kept = [(a, b, r) for a, b, r in plan.graph.edges(data="reason") if plan.graph.edges[a, b].get("order")]
    out = [f"order {a} -> {b} ({r})" for a, b, r in kept]
    free = [n for n in _database_statements(plan) if not any(n in (a, b) for a, b, _ in kept)]
    if free:
        out.append(f"unordered: {', '.join(free)} (no conflicting write)")
    return out


def _serialize(plan: LogicalPlan, d: Decisions) -> list[str]:
    stmts = _database_statements(plan)
    for a, b in zip(stmts, stmts[1:], strict=False):
        if not nx.has_path(plan.graph, a, b) and not nx.has_path(plan.graph, b, a):
            d.order_edges.append((a, b))
    return [f"order {a} -> {b} (declared order)" for a, b in d.order_edges]


def _kv(plan: LogicalPlan, cplan: ConsolidatedPlan | None, d: Decisions) -> list[str]:
    d.kv_retention = kv_retention(plan, KV_TTL_S)
    return [f"{n}: keep KV {s:.0f} s for its follow-up" for n, s in d.kv_retention.items()]


def _said(line: str) -> Callable[[LogicalPlan, Decisions], list[str]]:
    """A fallback that changes nothing in the decisions (their defaults are the plain behaviour)."""
    return lambda plan, d: [line]


RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule("merge", "serve identical calls once", _merge, _said("every instance runs as its own call")),
        Rule(
            "prefix_grouping",
            "group requests by shared prompt prefix",
            _prefix,
            _said("no prefix keys; batches ordered by prompt length"),
        ),
        Rule(
            "fusion",
            "share engine batches between LLM nodes that decode alike",
            _fusion,
            _said("each LLM node runs in batches of its own"),
        ),
        Rule("read_write_order", "order database statements only around writes", _read_write, _serialize),
        Rule("kv_retention", "keep a call's KV for the same input's follow-up", _kv, _said("no KV retained")),
        Rule(
            "co_residency",
            "keep models that fit one device awake together",
            lambda plan, cplan, d: ["models that fit a device stay awake together (memory split per device)"],
            _said("one model awake per device; a switch puts the others to sleep"),
        ),
    )
}


def check_names(names: Iterable[str]) -> set[str]:
    """The rule names given, or ValueError naming the unknown ones and the known ones."""
    names = set(names)
    unknown = sorted(names - set(RULES))
    if unknown:
        raise ValueError(f"unknown rule(s) {', '.join(unknown)}; rules are {', '.join(RULES)}")
    return names


def apply_rules(
    plan: LogicalPlan, cplan: ConsolidatedPlan | None, disabled: Iterable[str] = ()
) -> tuple[Decisions, list[Applied]]:
    """Run every rule in order (a disabled one runs its fallback); the decisions and what each did."""
    off = check_names(disabled)
    d = Decisions()
    applied = []
    for name, rule in RULES.items():
        if name in off:
            applied.append(Applied(name, False, rule.fallback(plan, d)))
        else:
            applied.append(Applied(name, True, rule.apply(plan, cplan, d)))
    return d, applied
