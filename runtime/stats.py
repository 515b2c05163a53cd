"""What a run measured, per operator and in total: the 'actual' side of EXPLAIN ANALYZE."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class NodeStats:
    instances: int = 0          # (input, node) pairs completed
    calls: int = 0              # calls actually executed
    memo_hits: int = 0          # served from an earlier identical call (or the journal)
    coalesced: int = 0          # joined an identical call still in flight
    errors: int = 0
    seconds: float = 0.0        # busy time of executed calls (as each call reports it)
    engine_s: float = 0.0       # LLM: this node's share (by requests) of its engine batches' wall time
    first_start: float | None = None
    last_end: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    batches: int = 0
    repairs: int = 0
    output_tokens: list[int] = field(default_factory=list, repr=False)

    def span(self, start: float, end: float) -> None:
        self.first_start = start if self.first_start is None else min(self.first_start, start)
        self.last_end = end if self.last_end is None else max(self.last_end, end)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("output_tokens")
        d["wall_seconds"] = (self.last_end - self.first_start) if self.first_start is not None else 0.0
        return d


@dataclass
class RunStats:
    inputs: int = 0
    failed: int = 0
    resumed: int = 0
    seconds: float = 0.0
    model_loads: int = 0
    load_seconds: float = 0.0
    nodes: dict[str, NodeStats] = field(default_factory=dict)
    substitutions: dict[str, str] = field(default_factory=dict)
    # One record per engine call: model, nodes {node: requests}, n, prompt_tokens, cached_tokens,
    # steps (the longest reply: decode iterations), node_steps {node: its longest reply},
    # seconds (wall time without model loading).
    engine_batches: list[dict] = field(default_factory=list)

    def totals(self) -> dict:
        ns = self.nodes.values()
        return {
            "inputs": self.inputs, "failed": self.failed, "resumed": self.resumed,
            "seconds": round(self.seconds, 3),
            "inputs_per_s": round(self.inputs / self.seconds, 3) if self.seconds else 0.0,
            "calls": sum(n.calls for n in ns), "instances": sum(n.instances for n in ns),
            "merged": sum(n.memo_hits + n.coalesced for n in ns),
            "prompt_tokens": sum(n.prompt_tokens for n in ns),
            "completion_tokens": sum(n.completion_tokens for n in ns),
            "cached_tokens": sum(n.cached_tokens for n in ns),
            "model_loads": self.model_loads, "load_seconds": round(self.load_seconds, 3),
            "substitutions": self.substitutions,
        }
