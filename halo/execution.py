"""The execution plan: the one object the runtime executes, and what EXPLAIN shows of it.

The planner builds it from the logical plan, the rules' decisions (`halo.rules`), the engine batch
policy the cost model priced and the optimizer's placement; the baselines build theirs with `for_mode`.
The executor reads nothing else: operator order, batch limits, fusion sets, which requests carry prefix
keys, ordering edges, KV retention, which devices run each LLM node and the planned model residency.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from halo.batching import BatchPolicy
from halo.consolidate import ConsolidatedPlan
from halo.plan import LogicalPlan
from halo.rules import RULES, Applied, apply_rules


@dataclass(frozen=True)
class ModelStep:
    """`model` becomes resident on `device` at `at_s` (planned seconds), evicting `evicted`."""

    device: str
    model: str
    at_s: float
    evicted: tuple[str, ...] = ()


@dataclass
class ExecutionPlan:
    logical: LogicalPlan
    order: list[str]  # node ids, dispatch priority (planned start)
    policy: BatchPolicy  # requests and tokens per engine call
    merge: bool = True
    barrier: bool = False  # operator at a time: node i starts after nodes < i finish
    fusion_sets: list[list[str]] = field(default_factory=list)
    prefix_nodes: list[str] = field(default_factory=list)
    order_edges: list[tuple[str, str]] = field(default_factory=list)
    kv_retention: dict[str, float] = field(default_factory=dict)
    placement: dict[str, list[str]] = field(default_factory=dict)  # LLM node -> devices (data parallel)
    residency: list[ModelStep] = field(default_factory=list)
    memory: dict[str, dict[str, float]] = field(default_factory=dict)  # device -> co-resident model shares
    sleep_levels: dict[str, dict[str, int]] = field(default_factory=dict)  # device -> evicted model -> level
    start_modes: dict[str, str] = field(default_factory=dict)  # model -> eager | compiled (accelerators)
    start_reasons: dict[str, str] = field(default_factory=dict)  # model -> why the cost model chose it
    rules: list[Applied] = field(default_factory=list)
    label: str = "halo"
    # the inputs whose calls the plan priced together (its consolidated batch): the executor keeps at least
    # that many in flight, so that the engine batches it forms are the ones priced
    inputs: int = 0

    @property
    def devices(self) -> list[str]:
        """Devices that run LLM work, in first-use order."""
        seen: dict[str, None] = {}
        for n in self.order:
            for dev in self.placement.get(n, ()):
                seen.setdefault(dev)
        return list(seen)

    def residency_on(self, device: str) -> list[ModelStep]:
        return sorted((s for s in self.residency if s.device == device), key=lambda s: s.at_s)

    def as_dict(self) -> dict[str, Any]:
        """The EXPLAIN JSON block `execution` (one "text" line per part)."""
        lines = [
            f"Execution ({self.label}): order {' -> '.join(self.order)}",
            f"  batches: up to {self.policy.max_batch} requests, {self.policy.batch_tokens:,} tokens"
            + ("; operator at a time" if self.barrier else "")
            + ("" if self.merge else "; no merging"),
        ]
        lines += [f"  fused: {', '.join(s)}" for s in self.fusion_sets]
        if self.prefix_nodes:
            lines.append(f"  prefix keys: {', '.join(self.prefix_nodes)}")
        lines += [f"  ordering: {a} -> {b}" for a, b in self.order_edges]
        lines += [f"  kv retained: {n} ({s:.0f} s)" for n, s in self.kv_retention.items()]
        for dev in self.devices:
            nodes = [n for n in self.order if dev in self.placement.get(n, ())]
            steps = ", ".join(
                f"{s.model} @{s.at_s:.1f}s" + (f" (evicts {', '.join(s.evicted)})" if s.evicted else "")
                for s in self.residency_on(dev)
            )
            split = self.memory.get(dev)
            held = (
                "; co-resident: " + ", ".join(f"{m} {s:.0%} of memory" for m, s in split.items())
                if split
                else ""
            )
            levels = self.sleep_levels.get(dev)
            if levels:
                held += "; sleeps: " + ", ".join(f"{m} level {lv}" for m, lv in sorted(levels.items()))
            lines.append(f"  {dev}: {', '.join(nodes)}" + (f"; models {steps}" if steps else "") + held)
        lines += [
            f"  starts {m} {mode} ({self.start_reasons.get(m, '')})" for m, mode in self.start_modes.items()
        ]
        lines += [
            f"  rule {a.rule}{'' if a.enabled else ' (disabled)'}: "
            + ("; ".join(a.actions) or "nothing to do")
            for a in self.rules
        ]
        return {
            "label": self.label,
            "order": self.order,
            "batching": {"max_batch": self.policy.max_batch, "batch_tokens": self.policy.batch_tokens},
            "merge": self.merge,
            "barrier": self.barrier,
            "fusion_sets": self.fusion_sets,
            "prefix_nodes": self.prefix_nodes,
            "order_edges": [list(e) for e in self.order_edges],
            "kv_retention": self.kv_retention,
            "placement": self.placement,
            "residency": [
                {"device": s.device, "model": s.model, "at_s": s.at_s, "evicted": list(s.evicted)}
                for s in self.residency
            ],
            "memory": self.memory,
            "sleep_levels": self.sleep_levels,
            "start_modes": self.start_modes,
            "rules": [a.as_dict() for a in self.rules],
            "text": "\n".join(lines),
        }


def build(
    plan: LogicalPlan,
    cplan: ConsolidatedPlan | None,
    policy: BatchPolicy,
    order: list[str] | None = None,
    placement: dict[str, list[str]] | None = None,
    residency: Iterable[ModelStep] = (),
    disabled: Iterable[str] = (),
    memory: dict[str, dict[str, float]] | None = None,
) -> ExecutionPlan:
    """The Halo execution plan: every rule not `disabled`, the given order (default: topological),
    placement, residency and memory split of co-resident models."""
    d, applied = apply_rules(plan, cplan, disabled)
    return ExecutionPlan(
        plan,
        _complete(plan, order),
        policy,
        merge=d.merge,
        fusion_sets=d.fusion_sets,
        prefix_nodes=d.prefix_nodes,
        order_edges=d.order_edges,
        kv_retention=d.kv_retention,
        placement=dict(placement or {}),
        residency=list(residency),
        memory=dict(memory or {}),
        rules=applied,
        inputs=cplan.inputs if cplan is not None else 0,
    )


# The baselines as execution plans: which rules they run and how they batch.
MODES: dict[str, dict[str, Any]] = {
    "naive": {
        "disabled": ("merge", "prefix_grouping"),
        "policy": BatchPolicy(8, BatchPolicy.batch_tokens),
        "window": 8,
    },
    "opwise": {"disabled": ("merge", "fusion"), "barrier": True},
    "halo": {},
}


def for_mode(plan: LogicalPlan, mode: str, policy: BatchPolicy | None = None) -> ExecutionPlan:
    """A baseline's plan (naive, opwise) or Halo's without a batch to consolidate (declaration order)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    spec = MODES[mode]
    x = build(plan, None, spec.get("policy") or policy or BatchPolicy(), disabled=spec.get("disabled", ()))
    x.barrier, x.label = spec.get("barrier", False), mode
    return x


def _complete(plan: LogicalPlan, order: list[str] | None) -> list[str]:
    """`order` with every node of the plan (missing ones appended in topological order)."""
    given = [n for n in (order or []) if n in plan.graph]
    return given + [op.id for op in plan.nodes() if op.id not in set(given)]


__all__ = ["RULES", "MODES", "ExecutionPlan", "ModelStep", "build", "for_mode"]
