"""Model residency per device: which models a plan keeps awake together, and how device memory is split.

The optimizer's timeline keeps a model resident while the resident set's weights plus the largest KV
need of its tasks fit the device (`halo.optimizer.timeline`); a load that evicts is a switch (the model
evicted sleeps). When every model placed on a device stays resident for the whole plan, they are
co-resident: each gets its weights plus a share of the KV memory left over, the share proportional to
its decode work there (its tasks' busy seconds on that device), so the model with most decoding gets the
largest cache. The runtime gives each engine its share (vLLM's `gpu_memory_utilization`). A model that is evicted
sleeps at the level the cost model chose for it (`halo.cost.sleep_levels`: 1 keeps its weights in host
memory, 2 discards them and re-reads them on wake).
"""

from __future__ import annotations

from halo.optimizer import PhysicalPlan, Problem

GPU_MEMORY_UTILIZATION = (
    0.9  # of a device's memory, what the engines on it may take together (vLLM's default)
)


def memory_split(problem: Problem, physical: PhysicalPlan) -> dict[str, dict[str, float]]:
    """Device -> {model: share of device memory} for devices whose two or more models are co-resident."""
    model_of = {t.id: t.model for t in problem.tasks}
    out: dict[str, dict[str, float]] = {}
    for dev in problem.devices:
        if dev.mem_bytes <= 0:
            continue
        work: dict[str, float] = {}
        for p in physical.placements:
            model = model_of.get(p.task)
            if model is not None and dev.id in p.devices:
                work[model] = work.get(model, 0.0) + (p.end - p.start)
        if len(work) < 2 or any(m.device == dev.id and m.evicted for m in physical.loads):
            continue
        weights = {m: problem.model_bytes.get(m, 0) for m in work}
        kv = GPU_MEMORY_UTILIZATION * dev.mem_bytes - sum(weights.values())
        if kv <= 0:
            continue
        total = sum(work.values())
        out[dev.id] = {
            m: _floor((weights[m] + kv * (work[m] / total if total > 0 else 1 / len(work))) / dev.mem_bytes)
            for m in sorted(work)
        }
    return out


def _floor(share: float) -> float:
    """Rounded down to 0.001, so that the shares never add up past the utilization."""
    return int(share * 1000) / 1000


def sleep_levels(problem: Problem, physical: PhysicalPlan) -> dict[str, dict[str, int]]:
    """Device -> {model: sleep level} for the models the plan evicts there."""
    kind = {d.id: d.kind for d in problem.devices}
    out: dict[str, dict[str, int]] = {}
    for load in physical.loads:
        for m in load.evicted:
            out.setdefault(load.device, {})[m] = problem.sleep_level.get((m, kind[load.device]), 1)
    return out
