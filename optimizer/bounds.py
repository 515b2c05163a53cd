"""Combinatorial lower bounds, valid for every plan of a problem (used when a solver gives none)."""

from __future__ import annotations

from .modes import task_modes
from .problem import Problem, pipelined, reload_s, topo_order


def makespan_lower_bound(problem: Problem) -> float:
    """max(critical path with the fastest modes and first loads, per-kind work / slots)."""
    tasks = {t.id: t for t in problem.tasks}
    devs = {d.id: d for d in problem.devices}
    modes = {t.id: task_modes(problem, t) for t in problem.tasks}
    es: dict[str, float] = {}
    ef: dict[str, float] = {}
    for t in topo_order(problem):
        dmin = min(m.duration for m in modes[t.id])
        start = 0.0
        if t.model:
            start = min(
                0.0 if t.model in problem.resident.get(d, []) else reload_s(problem, t.model, devs[d], False)
                for m in modes[t.id]
                for d in m.devices
            )
        end = 0.0
        for pid in t.deps:
            p = tasks[pid]
            pmin = min(m.duration for m in modes[pid])
            if pipelined(p, t):
                start = max(start, es[pid] + problem.overlap * pmin)
                end = max(end, ef[pid])
            else:
                start = max(start, ef[pid])
        es[t.id], ef[t.id] = start, max(end, start + dmin)
    best = max(ef.values(), default=0.0)
    for kind in {d.kind for d in problem.devices}:
        pool = {d.id for d in problem.devices if d.kind == kind}
        slots = sum(devs[d].slots for d in pool)
        work = 0.0
        for t in problem.tasks:
            if all(set(m.devices) <= pool for m in modes[t.id]):
                work += min(m.duration * len(m.devices) for m in modes[t.id])
        best = max(best, work / slots)
    return best


def cost_lower_bound(problem: Problem) -> float:
    """Sum over tasks of the cheapest busy dollars of any mode (loads ignored)."""
    kind = {d.id: d.kind for d in problem.devices}
    total = 0.0
    for t in problem.tasks:
        total += min(
            m.duration * sum(problem.price_per_hour.get(kind[d], 0.0) for d in m.devices)
            for m in task_modes(problem, t)
        )
    return total / 3600.0


def objective_lower_bound(problem: Problem) -> float:
    """Lower bound on :func:`halo.optimizer.physical.score` for ``problem.objective``."""
    if problem.objective == "cost":
        return cost_lower_bound(problem)
    ms = makespan_lower_bound(problem)
    if problem.objective == "mix":
        prices = [problem.price_per_hour.get(d.kind, 0.0) for d in problem.devices]
        mean = sum(prices) / len(prices) / 3600.0 if prices else 0.0
        return 0.5 * ms + (0.5 * cost_lower_bound(problem) / mean if mean > 0 else 0.0)
    return ms
