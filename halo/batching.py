"""How LLM calls become engine batches: one policy read by both the cost model and the runtime.

The runtime sends an engine at most `max_batch` requests whose expected tokens (prompt + output) fit
`batch_tokens`; independent LLM nodes that decode alike (same model, max_tokens, temperature, seed) share
a batch. The cost model prices exactly those batches, so what EXPLAIN predicts is what `halo run` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import networkx as nx

from halo.plan import LogicalPlan, OpNode
from halo.types import OPS

DECODING_OPTIONS = ("max_tokens", "temperature", "seed")


@dataclass(frozen=True)
class BatchPolicy:
    """Engine-batch limits: requests per engine call and a token budget per call."""

    max_batch: int = 32
    batch_tokens: int = 16384

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.batch_tokens < 1:
            raise ValueError("max_batch and batch_tokens must be positive")

    def sizes(self, calls: int, tokens_per_call: float) -> list[int]:
        """Batch sizes for `calls` equal calls of `tokens_per_call` expected tokens each (balanced)."""
        if calls <= 0:
            return []
        per = max(1, min(self.max_batch, int(self.batch_tokens // max(tokens_per_call, 1.0))))
        n = math.ceil(calls / per)
        base, extra = divmod(calls, n)
        return [base + (i < extra) for i in range(n)]


CANDIDATE_BATCHES = (8, 16, 32, 64, 128, 256)
TOKENS_PER_REQUEST = BatchPolicy.batch_tokens // BatchPolicy.max_batch  # the default budget's share


def candidates() -> list[BatchPolicy]:
    """Policies `halo explain` chooses among when none is given: the token budget grows with the batch."""
    return [BatchPolicy(b, b * TOKENS_PER_REQUEST) for b in CANDIDATE_BATCHES]


def decoding_key(op: OpNode) -> tuple:
    """Calls of nodes with equal keys can run in one engine batch: the model and the decoding options as
    they resolve (an option left out is its registry default, so `max_tokens = 256` equals leaving it out);
    an option that varies per input makes the node's key its own."""
    return (op.model, *(_setting(op, k) for k in DECODING_OPTIONS))


_PER_INPUT = object()


def _setting(op: OpNode, name: str) -> Any:
    if name not in op.args:
        return op.option(name)
    value = op.option(name, _PER_INPUT)
    return ("per input", op.id) if value is _PER_INPUT else value


def llm_depth(plan: LogicalPlan) -> dict[str, int]:
    """For every LLM node, the most LLM nodes on a path ending at it (itself included)."""
    depth: dict[str, int] = {}
    for nid in nx.topological_sort(plan.graph):
        up = max((depth.get(p, 0) for p in plan.graph.predecessors(nid)), default=0)
        depth[nid] = up + (not OPS[plan.node(nid).kind].tool)
    return {n: d for n, d in depth.items() if not OPS[plan.node(n).kind].tool}


def fusion_sets(plan: LogicalPlan) -> list[list[str]]:
    """LLM nodes that will share engine batches: same decoding key, same LLM depth (ready together),
    and no path between them. Singletons are left out."""
    depth = llm_depth(plan)
    buckets: dict[tuple, list[str]] = {}
    for nid in sorted(depth):
        buckets.setdefault((depth[nid], decoding_key(plan.node(nid))), []).append(nid)
    out = []
    for members in buckets.values():
        independent = [
            m
            for m in members
            if not any(
                nx.has_path(plan.graph, m, o) or nx.has_path(plan.graph, o, m) for o in members if o != m
            )
        ]
        if len(independent) > 1:
            out.append(independent)
    return out
