"""What a run measured, per operator and in total: the 'actual' side of EXPLAIN ANALYZE."""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field

ENGINE_RECORDS = 4096  # engine batches kept for calibration (the most recent ones)


@dataclass
class NodeStats:
    instances: int = 0  # (input, node) pairs completed
    calls: int = 0  # calls actually executed
    memo_hits: int = 0  # served from an earlier identical call (or the journal)
    coalesced: int = 0  # joined an identical call still in flight
    errors: int = 0
    seconds: float = 0.0  # busy time of executed calls (as each call reports it)
    engine_s: float = 0.0  # LLM: this node's share (by requests) of its engine batches' wall time
    first_start: float | None = None
    last_end: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    batches: int = 0
    repairs: int = 0
    # The most recent output lengths (the executor's batch budget uses their p90).
    output_tokens: deque[int] = field(default_factory=lambda: deque(maxlen=256), repr=False)

    def span(self, start: float, end: float) -> None:
        self.first_start = start if self.first_start is None else min(self.first_start, start)
        self.last_end = end if self.last_end is None else max(self.last_end, end)

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "output_tokens"}
        first, last = self.first_start, self.last_end  # span() sets both
        d["wall_seconds"] = (last - first) if first is not None and last is not None else 0.0
        return d


@dataclass
class RunStats:
    inputs: int = 0  # inputs run (to the end) by this run
    failed: int = 0  # of those, inputs with an error
    rejected: int = 0  # input rows that failed validation (never run)
    in_doubt: int = 0  # failed inputs with a side effect that an interrupted run may have done
    resumed: int = 0  # records already in the journal when this run started
    seconds: float = 0.0
    model_loads: int = 0
    load_seconds: float = 0.0
    nodes: dict[str, NodeStats] = field(default_factory=dict)
    substitutions: dict[str, str] = field(default_factory=dict)
    # One record per engine call: model, nodes {node: requests}, n, prompt_tokens, cached_tokens,
    # steps (the longest reply: decode iterations), node_steps {node: its longest reply},
    # seconds (wall time without model loading), device, load_s, end (seconds from the run's start).
    # At most 2 x ENGINE_RECORDS, the most recent.
    engine_batches: list[dict] = field(default_factory=list)
    engine_calls: int = 0
    # One record per model load: device, model, start and end (seconds from the run's start), preload
    # (True: loaded ahead of its batches while the engine had nothing to run).
    loads: list[dict] = field(default_factory=list)
    worker_restarts: dict[str, int] = field(default_factory=dict)  # device -> engine worker restarts
    timelines: dict[str, list[dict]] = field(default_factory=dict)  # device -> its worker's events
    workers: dict[str, dict] = field(default_factory=dict)  # device -> its worker's pid and Ray node

    def record_load(self, device: str, model: str, start: float, end: float, preload: bool) -> None:
        self.model_loads += 1
        self.load_seconds += end - start
        if len(self.loads) < ENGINE_RECORDS:
            self.loads.append(
                {"device": device, "model": model, "start": start, "end": end, "preload": preload}
            )

    def record_batch(self, record: dict) -> None:
        self.engine_calls += 1
        self.engine_batches.append(record)
        if len(self.engine_batches) >= 2 * ENGINE_RECORDS:
            del self.engine_batches[:ENGINE_RECORDS]

    def totals(self) -> dict:
        ns = self.nodes.values()
        return {
            "inputs": self.inputs,
            "failed": self.failed,
            "rejected": self.rejected,
            "in_doubt": self.in_doubt,
            "resumed": self.resumed,
            "engine_calls": self.engine_calls,
            "seconds": round(self.seconds, 3),
            "inputs_per_s": round(self.inputs / self.seconds, 3) if self.seconds else 0.0,
            "calls": sum(n.calls for n in ns),
            "instances": sum(n.instances for n in ns),
            "merged": sum(n.memo_hits + n.coalesced for n in ns),
            "prompt_tokens": sum(n.prompt_tokens for n in ns),
            "completion_tokens": sum(n.completion_tokens for n in ns),
            "cached_tokens": sum(n.cached_tokens for n in ns),
            "model_loads": self.model_loads,
            "preloads": sum(1 for x in self.loads if x["preload"]),
            "load_seconds": round(self.load_seconds, 3),
            "worker_restarts": sum(self.worker_restarts.values()),
            "substitutions": self.substitutions,
        }
