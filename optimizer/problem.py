"""Problem format: tasks (operator groups), devices and model facts the planners read.

A cost model produces a :class:`Problem`; every planner in this package consumes only it.
Durations are for the whole group (the batch is folded in). Times are seconds.

Conventions shared by every planner, the validator and the simulator:

* ``Task.duration`` is looked up by device id first, then by device kind; absent = not allowed.
* A model load on a device costs ``load_s[(model, kind)]`` (missing key = 0 s). If the model was on
  that device before (resident at t=0 or loaded earlier and since evicted) and ``wake_s`` has the key,
  the reload costs ``wake_s`` instead (sleep-mode wake). A load that evicts models also pays
  ``sleep_s[(evicted, kind)]`` for each (putting it to sleep: level 1 copies its weights to the host).
* ``max_resident`` > 0 caps how many models a device keeps awake at once (1: one model at a time).
* A device holds any set of models whose weights plus the running tasks' ``mem_bytes`` fit in
  ``mem_bytes`` (0 = unlimited). Loads occupy one slot of the device.
* Edge ``p -> c`` is *pipelined* when both tasks have ``pipelined=True``; then
  ``start(c) >= start(p) + overlap * dur(p)`` and ``end(c) >= end(p)`` (a wavefront child cannot
  finish before its parent). Otherwise ``start(c) >= end(p)``.
* ``cost_usd`` = sum over devices of ``price_per_hour[kind] / 3600 * busy seconds`` (tasks and loads).
  ``objective="mix"`` minimises ``0.5 * makespan + 0.5 * cost_usd / mean_price_per_second``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


class ProblemError(ValueError):
    """The problem is malformed (unknown ids, cycles) or infeasible (nothing can run a task)."""


@dataclass
class Device:
    """One schedulable resource (a GPU, a CPU tool pool, a PIM device...)."""

    id: str
    kind: str
    mem_bytes: int
    slots: int = 1
    simulated: bool = False


@dataclass
class Task:
    """One operator group: a node of the workflow over the whole batch."""

    id: str
    kind: str
    deps: list[str]
    duration: dict[str, float]
    model: str | None = None
    mem_bytes: int = 0
    shardable: bool = False
    prefix_group: str | None = None
    pipelined: bool = True


@dataclass
class Problem:
    """Tasks, devices and model facts; see the module docstring for the shared semantics."""

    tasks: list[Task]
    devices: list[Device]
    model_bytes: dict[str, int]
    load_s: dict[tuple[str, str], float]
    wake_s: dict[tuple[str, str], float] = field(default_factory=dict)
    sleep_s: dict[tuple[str, str], float] = field(default_factory=dict)
    sleep_level: dict[tuple[str, str], int] = field(default_factory=dict)  # the cost model's choice (1 or 2)
    max_resident: int = 0
    resident: dict[str, list[str]] = field(default_factory=dict)
    price_per_hour: dict[str, float] = field(default_factory=dict)
    objective: str = "makespan"
    overlap: float = 0.0


def duration_on(task: Task, dev: Device) -> float | None:
    """Seconds for the whole task on ``dev`` (id wins over kind), or None when not allowed."""
    if dev.id in task.duration:
        return float(task.duration[dev.id])
    if dev.kind in task.duration:
        return float(task.duration[dev.kind])
    return None


def fits(problem: Problem, task: Task, dev: Device) -> bool:
    """True when the task's model weights plus its own memory fit on ``dev`` alone."""
    if dev.mem_bytes <= 0:
        return True
    weights = problem.model_bytes.get(task.model, 0) if task.model else 0
    return weights + task.mem_bytes <= dev.mem_bytes


def reload_s(problem: Problem, model: str, dev: Device, seen: bool) -> float:
    """Seconds to make ``model`` resident on ``dev``; ``seen`` = it was there before (wake applies)."""
    key = (model, dev.kind)
    if seen and key in problem.wake_s:
        return float(problem.wake_s[key])
    return float(problem.load_s.get(key, 0.0))


def switch_s(problem: Problem, model: str, dev: Device, seen: bool, evicted) -> float:
    """Seconds for a load of ``model`` on ``dev`` that first puts ``evicted`` to sleep."""
    return reload_s(problem, model, dev, seen) + sum(problem.sleep_s.get((e, dev.kind), 0.0) for e in evicted)


def pipelined(parent: Task, child: Task) -> bool:
    return parent.pipelined and child.pipelined


def topo_order(problem: Problem) -> list[Task]:
    """Tasks in a deterministic topological order (input order breaks ties); raises on cycles/unknown deps."""
    tasks = {t.id: t for t in problem.tasks}
    if len(tasks) != len(problem.tasks):
        raise ProblemError("duplicate task ids")
    index = {t.id: i for i, t in enumerate(problem.tasks)}
    indeg = {t.id: 0 for t in problem.tasks}
    children: dict[str, list[str]] = {t.id: [] for t in problem.tasks}
    for t in problem.tasks:
        for p in t.deps:
            if p not in tasks:
                raise ProblemError(f"task {t.id!r} depends on unknown task {p!r}")
            indeg[t.id] += 1
            children[p].append(t.id)
    heap = [index[t] for t, k in indeg.items() if k == 0]
    heapq.heapify(heap)
    out: list[Task] = []
    while heap:
        t = problem.tasks[heapq.heappop(heap)]
        out.append(t)
        for c in children[t.id]:
            indeg[c] -= 1
            if indeg[c] == 0:
                heapq.heappush(heap, index[c])
    if len(out) != len(problem.tasks):
        raise ProblemError("task graph has a cycle")
    return out


def children_of(problem: Problem) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {t.id: [] for t in problem.tasks}
    for t in problem.tasks:
        for p in t.deps:
            out[p].append(t.id)
    return out


def check(problem: Problem) -> None:
    """Raise :class:`ProblemError` unless every task has at least one device it can run on and fit."""
    if not 0.0 <= problem.overlap <= 1.0:
        raise ProblemError(f"overlap must be in [0, 1], got {problem.overlap}")
    if problem.objective not in ("makespan", "cost", "mix"):
        raise ProblemError(f"unknown objective {problem.objective!r}")
    topo_order(problem)
    if len({d.id for d in problem.devices}) != len(problem.devices):
        raise ProblemError("duplicate device ids")
    for t in problem.tasks:
        if t.model is not None and t.model not in problem.model_bytes:
            raise ProblemError(f"task {t.id!r} uses model {t.model!r} missing from model_bytes")
        allowed = [d for d in problem.devices if duration_on(t, d) is not None]
        if not allowed:
            raise ProblemError(f"task {t.id!r}: no device of kinds {sorted(t.duration)} exists")
        if not any(fits(problem, t, d) for d in allowed):
            need = (problem.model_bytes.get(t.model, 0) if t.model else 0) + t.mem_bytes
            caps = ", ".join(f"{d.id}={d.mem_bytes}" for d in allowed)
            raise ProblemError(
                f"infeasible: task {t.id!r} needs {need} bytes (model {t.model!r} weights + task memory) "
                f"but no allowed device has that much memory ({caps})"
            )
