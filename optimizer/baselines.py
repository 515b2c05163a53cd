"""Baseline plans the optimizer is compared with (all timed by :class:`Timeline`, so all valid).

* :func:`per_query` - naive per-query execution: every input walks its own copy of the DAG, each model
  pinned to one device, no consolidation across inputs (the caller gives the per-input graph).
* :func:`opwise` - operator-at-a-time: each task over the whole batch in topological order,
  data-parallel over every eligible device of its fastest kind, with a barrier between operators.
* :func:`round_robin` - topological order, devices taken round-robin among those allowed.
"""

from __future__ import annotations

import time
from dataclasses import replace

from .heuristic import build
from .modes import task_modes
from .physical import PhysicalPlan
from .problem import Problem, ProblemError, Task, check, topo_order
from .timeline import Timeline


def per_query_problem(per_input: Problem, n_inputs: int) -> Problem:
    """``n_inputs`` copies of the per-input graph; copy i of task t is ``f"{t}#{i}"``."""
    tasks = [
        replace(t, id=f"{t.id}#{i}", deps=[f"{p}#{i}" for p in t.deps], shardable=False)
        for i in range(n_inputs)
        for t in per_input.tasks
    ]
    return replace(per_input, tasks=tasks)


def per_query(per_input: Problem, n_inputs: int) -> PhysicalPlan:
    """Naive plan for :func:`per_query_problem` (validate against that problem)."""
    t0 = time.perf_counter()
    check(per_input)
    models = sorted({t.model for t in per_input.tasks if t.model})
    pin: dict[str, str] = {}
    for k, m in enumerate(models):
        users = [t for t in per_input.tasks if t.model == m]
        allowed = [
            d.id
            for d in per_input.devices
            if all(any(md.devices == (d.id,) for md in task_modes(per_input, t)) for t in users)
        ]
        if not allowed:
            raise ProblemError(f"per_query: no single device can run every task of model {m!r}")
        pin[m] = allowed[k % len(allowed)]
    problem = per_query_problem(per_input, n_inputs)
    modes = {t.id: task_modes(problem, t) for t in problem.tasks}
    fixed, rr = {}, 0
    for t in problem.tasks:
        if t.model:
            fixed[t.id] = next(i for i, m in enumerate(modes[t.id]) if m.devices == (pin[t.model],))
        else:
            fixed[t.id], rr = rr % len(modes[t.id]), rr + 1
    order = {t.id: i for i, t in enumerate(topo_order(per_input))}
    keys: dict[str, float] = {
        t.id: int(t.id.rsplit("#", 1)[1]) * len(order) + order[t.id.rsplit("#", 1)[0]] for t in problem.tasks
    }
    tl, _ = build(problem, modes, keys, fixed)
    return tl.plan(
        "per_query",
        "heuristic",
        solve_s=time.perf_counter() - t0,
        notes=[f"{n_inputs} inputs, models pinned: {pin}"],
    )


def _widest(problem: Problem, task: Task):
    """The fastest mode using the most devices (data-parallel over the whole pool when shardable)."""
    modes = task_modes(problem, task)
    return min(modes, key=lambda m: (-len(m.devices), m.duration))


def opwise(problem: Problem) -> PhysicalPlan:
    """Operator-at-a-time plan: one task at a time, each as wide as it can go."""
    t0 = time.perf_counter()
    check(problem)
    tl, barrier = Timeline(problem), 0.0
    for t in topo_order(problem):
        slot = tl.probe(t, _widest(problem, t), not_before=barrier)
        if slot is None:
            raise ProblemError(f"opwise: cannot place {t.id!r}")
        tl.commit(slot)
        barrier = slot.end
    return tl.plan("opwise", "heuristic", solve_s=time.perf_counter() - t0)


def round_robin(problem: Problem) -> PhysicalPlan:
    """Round-robin over devices in topological order (single-device modes only)."""
    t0 = time.perf_counter()
    check(problem)
    tl, turn = Timeline(problem), 0
    ids = [d.id for d in problem.devices]
    for t in topo_order(problem):
        singles = {m.devices[0]: m for m in task_modes(problem, t) if len(m.devices) == 1}
        for k in range(len(ids)):
            dev = ids[(turn + k) % len(ids)]
            slot = tl.probe(t, singles[dev]) if dev in singles else None
            if slot is not None:
                turn = (turn + k + 1) % len(ids)
                break
        else:
            raise ProblemError(f"round_robin: cannot place {t.id!r}")
        tl.commit(slot)
    return tl.plan("round_robin", "heuristic", solve_s=time.perf_counter() - t0)
