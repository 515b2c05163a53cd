"""Engine batches from the queued LLM calls: which node goes next and which calls go with it.

Pure bookkeeping (no threads, no engine), so the rules can be tested on plain data. A queued call is
anything with ``node`` and ``request`` (a `GenRequest`); the caller says what a call is expected to
cost (`cost`: prompt + expected output tokens) and which instances are still upstream (`unstarted`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from typing import Any


class BatchFormation:
    """Per-node queues of LLM calls and the rule that turns them into engine batches of at most `max_batch`
    calls whose costs fit `batch_tokens` (a call that alone exceeds it goes alone).

    `siblings`: for each node, the nodes it shares batches with (the plan's fusion sets, which the cost
    model prices as shared batches; no other nodes share one); `rank`: plan priority (lower first);
    `models`: each node's model; `max_wait_s`: a queued call waits at most this long for its batch to
    fill (None: until no instance is upstream; online serving, where upstream never drains, bounds it).
    """

    def __init__(
        self,
        max_batch: int,
        batch_tokens: int,
        siblings: Mapping[str, list[str]],
        rank: Mapping[str, int],
        models: Mapping[str, str],
        cost: Callable[[Any], int],
        max_wait_s: float | None = None,
    ):
        self.max_batch, self.batch_tokens = max_batch, batch_tokens
        self.siblings, self.rank = siblings, rank
        self.models, self.cost = models, cost
        self.max_wait_s = max_wait_s
        self.queues: dict[str, list[Any]] = defaultdict(list)  # by node
        self.since: dict[str, float] = {}  # node -> when its oldest queued call arrived

    def add(self, call: Any) -> None:
        if not self.queues[call.node]:
            self.since[call.node] = time.monotonic()
        self.queues[call.node].append(call)

    def ready(self, node: str, unstarted: Mapping[str, int]) -> bool:
        """A node goes when its queue (with its siblings') fills a batch, when none of their instances is
        still waiting upstream (one full batch costs about as much as a small one on a GPU), or when its
        oldest call has waited `max_wait_s`."""
        group = [node, *self.siblings.get(node, ())]
        if self.max_wait_s is not None and any(
            self.queues[n] and time.monotonic() - self.since[n] >= self.max_wait_s for n in group
        ):
            return True
        return sum(len(self.queues[n]) for n in group) >= self.max_batch or all(
            unstarted.get(n, 0) <= 0 for n in group
        )

    def next_batch(
        self,
        unstarted: Mapping[str, int],
        resident: Collection[str],
        idle: bool,
        nodes: Collection[str] | None = None,
    ) -> list[Any]:
        """The next engine batch of `nodes` (None: any; empty result: wait). When no node is ready and
        nothing else is in flight (`idle`), the largest queue goes anyway. Among ready nodes: a `resident`
        model first, then plan priority; its ready siblings join the batch."""
        allowed = self.queues.keys() if nodes is None else nodes
        nodes = [n for n, q in self.queues.items() if q and n in allowed]
        ready = [n for n in nodes if self.ready(n, unstarted)]
        if not ready:
            if not idle or not nodes:
                return []
            ready = [max(nodes, key=lambda n: len(self.queues[n]))]
        node = min(ready, key=lambda n: (self.models[n] not in resident, self.rank[n]))
        batch = self.take(node, [])
        siblings = self.siblings.get(node, ())
        for other in sorted(ready, key=self.rank.__getitem__):
            if other in siblings and len(batch) < self.max_batch:
                batch = self.take(other, batch)
        return batch

    def take(self, node: str, batch: list[Any]) -> list[Any]:
        """Add the node's calls to `batch`: prefix groups together, short prompts first, within the budgets."""
        calls = self.queues[node]
        calls.sort(key=lambda c: (c.request.prefix_key or "", len(c.request.prompt)))
        budget = sum(self.cost(c) for c in batch)
        taken = 0
        for c in calls:
            cost = self.cost(c)
            if batch and (len(batch) >= self.max_batch or budget + cost > self.batch_tokens):
                break
            batch.append(c)
            budget += cost
            taken += 1
        self.queues[node] = calls[taken:]
        if self.queues[node]:
            self.since[node] = time.monotonic()  # the calls left wait afresh, at the head of the queue
        return batch
